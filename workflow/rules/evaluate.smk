# Downstream evaluation: (objective x dataset x fraction) for the probe and segmentation, objective x
# task for zero-shot / retrieval / grounding, then the results report. "random" is the untrained row.


wildcard_constraints:
    ds="[A-Za-z0-9_]+",
    pct="[0-9.]+",
    text_task="|".join(layout.TEXT_TASKS),


TEXT_COMMANDS = {"zeroshot": "zeroshot", "retrieval": "retrieve", "grounding": "ground"}


rule prepare_downstream:
    input:
        downstream_inputs,
    output:
        manifest=RUN.downstream("{ds}").manifest,
        qc=RUN.downstream("{ds}").qc,
    log:
        RUN.log("downstream", "{ds}"),
    params:
        cfg=section_json("data", "preprocess", "downstream"),
        out_dir=downstream_dir,
    conda:
        "../../environment.yml"
    shell:
        "simcrop prepare --set-json {params.cfg:q} --dataset {wildcards.ds} --out-dir {params.out_dir} --quiet"
        " > {log} 2>&1"


rule probe_features:
    input:
        qc=eval_data,
        encoder=encoder_input,
    output:
        RUN.evaluation("{objective}", "probe", "{ds}", layout.FEATURES),
    log:
        RUN.log("evaluate", "{objective}", "probe", "{ds}", layout.FEATURES),
    benchmark:
        RUN.benchmark("probe", "{objective}", "{ds}", layout.FEATURES)
    params:
        cfg=section_json("data", "model", "probe", "experiment", "downstream"),
    conda:
        "../../environment.yml"
    shell:
        "simcrop probe --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --features-only --out {output} --quiet > {log} 2>&1"


rule probe:
    input:
        features=RUN.evaluation("{objective}", "probe", "{ds}", layout.FEATURES),
        qc=eval_data,
        encoder=encoder_input,
    output:
        RUN.evaluation("{objective}", "probe", "{ds}", "{pct}"),
    log:
        RUN.log("evaluate", "{objective}", "probe", "{ds}", "{pct}"),
    benchmark:
        RUN.benchmark("probe", "{objective}", "{ds}", "{pct}")
    params:
        cfg=section_json("data", "model", "probe", "experiment", "downstream"),
        fraction=fraction_of,
    conda:
        "../../environment.yml"
    shell:
        "simcrop probe --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --fraction {params.fraction} --out {output} --quiet > {log} 2>&1"


rule segment:
    input:
        qc=eval_data,
        encoder=encoder_input,
    output:
        RUN.evaluation("{objective}", "segment", "{ds}", "{pct}"),
    log:
        RUN.log("evaluate", "{objective}", "segment", "{ds}", "{pct}"),
    benchmark:
        RUN.benchmark("segment", "{objective}", "{ds}", "{pct}")
    params:
        cfg=section_json("data", "model", "segment", "experiment", "downstream"),
        fraction=fraction_of,
    conda:
        "../../environment.yml"
    shell:
        "simcrop segment --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --fraction {params.fraction} --out {output} --quiet > {log} 2>&1"


rule evaluate_text:
    input:
        encoder=RUN.encoder("{objective}"),
        sentences=RUN.sentences,
        qc=RUN.qc,
    output:
        RUN.evaluation("{objective}", "{text_task}"),
    log:
        RUN.log("evaluate", "{objective}", "{text_task}"),
    params:
        # a function: the prompt templates' "{label}" must not be read as a wildcard
        cfg=lambda wildcards: section_json("evaluate"),
        command=lambda wildcards: TEXT_COMMANDS[wildcards.text_task],
        checkpoint=lambda wildcards: RUN.checkpoint(wildcards.objective),
    conda:
        "../../environment.yml"
    shell:
        "simcrop {params.command} --set-json {params.cfg:q} --checkpoint {params.checkpoint} --out {output}"
        " --quiet > {log} 2>&1"


rule report:
    input:
        layout.report_inputs(CFG),
    output:
        md=RUN.report / "results.md",
        json=RUN.report / "results.json",
        metrics=RUN.report / "metrics.json",
        fractions=RUN.report / "fraction_curves.csv",
        losses=RUN.report / "loss_curves.csv",
        html=report(RUN.report / "results.html", caption="../report/results.rst", category="Results",
                    labels={"result": "results table"}),
        fraction_png=report(RUN.report / "figures/fraction_curves.png", caption="../report/fraction_curves.rst",
                            category="Results", labels={"result": "metric vs. training-data fraction"}),
        loss_png=report(RUN.report / "figures/loss_curves.png", caption="../report/loss_curves.rst",
                        category="Pre-training", labels={"result": "pre-training loss curves"}),
        # the heat maps (how many depends on the data) in one page; a directory output would get a
        # .snakemake_timestamp file that `dvc plots show` of report/figures cannot read
        heatmaps=report(RUN.report / "heatmaps.html", caption="../report/heatmaps.rst", category="Results",
                        labels={"result": "grounding heat maps"}),
        benchmarks=report(RUN.report / "benchmarks.html", caption="../report/benchmarks.rst",
                          category="Runtime and memory", labels={"result": "runtime and memory per job"}),
    log:
        RUN.log("report"),
    params:
        cfg=section_json("experiment", "downstream", rows=True),
        out_dir=lambda wildcards, output: os.path.dirname(output.md),
    conda:
        "../../environment.yml"
    shell:
        "simcrop report --set-json {params.cfg:q} --out-dir {params.out_dir} > {log} 2>&1"
