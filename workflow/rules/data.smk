# Dataset → manifest → preprocessed volumes (one job per shard of `preprocess.shard_size` volumes).


rule synthesize:
    output:
        marker=layout.synthetic_marker(CFG.data.root),
    log:
        RUN.log("synthesize"),
    params:
        cfg=section_json("synthesize", "data"),
        root=corpus_root,
    threads: CFG.synthesize.workers
    conda:
        "../../environment.yml"
    shell:
        "simcrop synthesize --set-json {params.cfg:q} --out {params.root} --quiet > {log} 2>&1"


checkpoint ingest:
    input:
        ingest_inputs,
    output:
        manifest=RUN.manifest,
        report=RUN.ingest_report,
    log:
        RUN.log("ingest"),
    params:
        cfg=section_json("data"),
    conda:
        "../../environment.yml"
    shell:
        "simcrop ingest --set-json {params.cfg:q} --manifest {output.manifest} --report {output.report}"
        " > {log} 2>&1"


rule preprocess_shard:
    input:
        manifest=RUN.manifest,
    output:
        qc=RUN.preprocessed.shard_qc("{shard}"),
        quarantine=RUN.preprocessed.shard_quarantine("{shard}"),
    log:
        RUN.log("preprocess", "{shard}"),
    benchmark:
        RUN.benchmark("preprocess", "{shard}")
    params:
        cfg=section_json("preprocess"),
        out_dir=preprocessed_dir,
    threads: 1
    conda:
        "../../environment.yml"
    shell:
        "simcrop preprocess --set-json {params.cfg:q} --manifest {input.manifest} --shard {wildcards.shard}"
        " --out-dir {params.out_dir} --quiet > {log} 2>&1"


rule gather_qc:
    input:
        shard_qc_files,
    output:
        qc=RUN.qc,
        quarantine=RUN.quarantine,
        summary=report(RUN.preprocess_summary, caption="../report/qc_summary.rst", category="Data",
                       labels={"result": "preprocessing QC summary"}),
    log:
        RUN.log("gather_qc"),
    params:
        cfg=section_json("preprocess"),
        out_dir=run_dir_of_qc,
    conda:
        "../../environment.yml"
    shell:
        "simcrop gather --set-json {params.cfg:q} --out-dir {params.out_dir} {input} > {log} 2>&1"
