# Pre-training: one job per row (SimCroP, its batch-negative variant, the baselines, the supervised upper
# bound for the probe, and the experiment's named variants: ablations, seeds, an MAE start).


wildcard_constraints:
    objective=ALL_ROWS,


rule pretrain:
    wildcard_constraints:
        objective=TRAINED_ROWS,
    input:
        manifest=RUN.manifest,
        sentences=RUN.sentences,
        qc=RUN.qc,
        init=pretrain_init,
    output:
        encoder=RUN.encoder("{objective}"),
        metrics=RUN.pretrain_metrics("{objective}"),
    log:
        RUN.log("pretrain", "{objective}"),
    benchmark:
        RUN.benchmark("pretrain", "{objective}")
    params:
        cfg=pretrain_json,
        out_dir=pretrain_dir,
    threads: workflow.cores
    conda:
        "../../environment.yml"
    shell:
        # --on-change restart: Snakemake reruns this job when its settings changed; a checkpoint made
        # with the old ones is discarded rather than resumed (an unchanged one is resumed).
        "simcrop pretrain --set-json {params.cfg:q} --out-dir {params.out_dir} --on-change restart --quiet"
        " > {log} 2>&1"
