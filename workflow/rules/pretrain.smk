# Pre-training: one job per row (SimCroP, its batch-negative variant, the baselines, the supervised upper
# bound for the probe, and the experiment's named variants: ablations, seeds, an MAE start).


wildcard_constraints:
    objective=ALL_ROWS,


# (gpus_per_node, nodes) of each pre-trained row: its DDP processes (simcrop.train.launch) and, on SLURM
# (config/profiles/slurm), the job's resources: one task per node, each a torchrun of gpus_per_node ranks
# with `threads` CPUs per rank (the profile's set-threads). `mpi` marks a job that calls srun itself
# (several nodes), so the executor does not wrap it in a one-task srun. Locally they constrain nothing.
PROCESSES = {
    row: (int(settings["gpus_per_node"]), int(settings["nodes"]))
    for row in layout.trained_rows(CFG)
    for settings in [layout.pretrain_settings(CFG, row)[1]]
}


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
        gpus_per_node=lambda wildcards: PROCESSES[wildcards.objective][0],
        nodes=lambda wildcards: PROCESSES[wildcards.objective][1],
    threads: workflow.cores
    resources:
        nodes=lambda wildcards: PROCESSES[wildcards.objective][1],
        tasks=lambda wildcards: PROCESSES[wildcards.objective][1],
        tasks_per_gpu=0,
        gres=lambda wildcards: f"gpu:{PROCESSES[wildcards.objective][0]}",
        cpus_per_task=lambda wildcards, threads: threads * PROCESSES[wildcards.objective][0],
        mpi=lambda wildcards: "srun" if PROCESSES[wildcards.objective][1] > 1 else "",
    conda:
        "../../environment.yml"
    shell:
        # --on-change restart: Snakemake reruns this job when its settings changed; a checkpoint made
        # with the old ones is discarded rather than resumed (an unchanged one is resumed).
        # simcrop.train.launch runs `simcrop pretrain` once, or under torchrun as gpus_per_node x nodes ranks.
        "python -m simcrop.train.launch --gpus-per-node {params.gpus_per_node} --nodes {params.nodes} --"
        " pretrain --set-json {params.cfg:q} --out-dir {params.out_dir} --on-change restart --quiet"
        " > {log} 2>&1"
