# Dataset → manifest → preprocessed volumes (one job per shard of `preprocess.shard_size` volumes).


rule synthesize:
    output:
        marker=f"{CFG.data.root}/synthetic/corpus.json",
    log:
        f"{LOGS}/synthesize.log",
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
        manifest=f"{RUN}/manifest.csv",
        report=f"{RUN}/ingest_report.json",
    log:
        f"{LOGS}/ingest.log",
    params:
        cfg=section_json("data"),
    conda:
        "../../environment.yml"
    shell:
        "simcrop ingest --set-json {params.cfg:q} --manifest {output.manifest} --report {output.report}"
        " > {log} 2>&1"


rule preprocess_shard:
    input:
        manifest=f"{RUN}/manifest.csv",
    output:
        qc=f"{RUN}/preprocessed/shards/{{shard}}.qc.csv",
        quarantine=f"{RUN}/preprocessed/shards/{{shard}}.quarantine.csv",
    log:
        f"{LOGS}/preprocess/{{shard}}.log",
    benchmark:
        f"{RUN}/benchmarks/preprocess/{{shard}}.tsv"
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
        qc=f"{RUN}/qc.csv",
        quarantine=f"{RUN}/quarantine.csv",
        summary=report(f"{RUN}/preprocess_summary.json", caption="../report/qc_summary.rst", category="Data",
                       labels={"result": "preprocessing QC summary"}),
    log:
        f"{LOGS}/gather_qc.log",
    params:
        cfg=section_json("preprocess"),
        out_dir=run_dir_of_qc,
    conda:
        "../../environment.yml"
    shell:
        "simcrop gather --set-json {params.cfg:q} --out-dir {params.out_dir} {input} > {log} 2>&1"
