# Downstream evaluation: (objective x dataset x fraction) for the probe and segmentation, objective x
# task for zero-shot / retrieval / grounding, then the results report. "random" is the untrained row.


wildcard_constraints:
    ds="[A-Za-z0-9_]+",
    pct="[0-9.]+",
    text_task="zeroshot|retrieval|grounding",


TEXT_COMMANDS = {"zeroshot": "zeroshot", "retrieval": "retrieve", "grounding": "ground"}


rule prepare_downstream:
    input:
        downstream_inputs,
    output:
        manifest=f"{RUN}/downstream/{{ds}}/manifest.csv",
        qc=f"{RUN}/downstream/{{ds}}/qc.csv",
    log:
        f"{LOGS}/downstream/{{ds}}.log",
    params:
        cfg=section_json("data", "preprocess", "downstream"),
        out_dir=downstream_dir,
    shell:
        "simcrop prepare --set-json {params.cfg:q} --dataset {wildcards.ds} --out-dir {params.out_dir} --quiet"
        " > {log} 2>&1"


rule probe_features:
    input:
        qc=eval_data,
        encoder=encoder_input,
    output:
        f"{RUN}/evaluate/{{objective}}/probe/{{ds}}/features.json",
    log:
        f"{LOGS}/evaluate/{{objective}}/probe/{{ds}}/features.log",
    params:
        cfg=section_json("data", "model", "probe", "experiment", "downstream"),
    shell:
        "simcrop probe --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --features-only --out {output} --quiet > {log} 2>&1"


rule probe:
    input:
        features=f"{RUN}/evaluate/{{objective}}/probe/{{ds}}/features.json",
        qc=eval_data,
        encoder=encoder_input,
    output:
        f"{RUN}/evaluate/{{objective}}/probe/{{ds}}/{{pct}}.json",
    log:
        f"{LOGS}/evaluate/{{objective}}/probe/{{ds}}/{{pct}}.log",
    params:
        cfg=section_json("data", "model", "probe", "experiment", "downstream"),
        fraction=fraction_of,
    shell:
        "simcrop probe --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --fraction {params.fraction} --out {output} --quiet > {log} 2>&1"


rule segment:
    input:
        qc=eval_data,
        encoder=encoder_input,
    output:
        f"{RUN}/evaluate/{{objective}}/segment/{{ds}}/{{pct}}.json",
    log:
        f"{LOGS}/evaluate/{{objective}}/segment/{{ds}}/{{pct}}.log",
    params:
        cfg=section_json("data", "model", "segment", "experiment", "downstream"),
        fraction=fraction_of,
    shell:
        "simcrop segment --set-json {params.cfg:q} --dataset {wildcards.ds} --objective {wildcards.objective}"
        " --fraction {params.fraction} --out {output} --quiet > {log} 2>&1"


rule evaluate_text:
    input:
        encoder=f"{RUN}/pretrain/{{objective}}/encoder.pt",
        sentences=f"{RUN}/sentences.jsonl",
        qc=f"{RUN}/qc.csv",
    output:
        f"{RUN}/evaluate/{{objective}}/{{text_task}}.json",
    log:
        f"{LOGS}/evaluate/{{objective}}/{{text_task}}.log",
    params:
        # a function: the prompt templates' "{label}" must not be read as a wildcard
        cfg=lambda wildcards: section_json("evaluate"),
        command=lambda wildcards: TEXT_COMMANDS[wildcards.text_task],
        checkpoint=lambda wildcards: eval_targets.checkpoint_path(CFG, wildcards.objective),
    shell:
        "simcrop {params.command} --set-json {params.cfg:q} --checkpoint {params.checkpoint} --out {output}"
        " --quiet > {log} 2>&1"


rule report:
    input:
        evaluation_targets(),
        expand(f"{RUN}/pretrain/{{objective}}/metrics.json", objective=PRETRAINED),
    output:
        md=f"{RUN}/report/results.md",
        json=f"{RUN}/report/results.json",
        metrics=f"{RUN}/report/metrics.json",
        fractions=f"{RUN}/report/fraction_curves.csv",
        losses=f"{RUN}/report/loss_curves.csv",
    log:
        f"{LOGS}/report.log",
    params:
        cfg=section_json("experiment", "downstream"),
        out_dir=lambda wildcards, output: os.path.dirname(output.md),
    shell:
        "simcrop report --set-json {params.cfg:q} --out-dir {params.out_dir} > {log} 2>&1"
