# Report sections → sentences with character offsets (spaCy).


rule sentences:
    input:
        manifest=f"{RUN}/manifest.csv",
    output:
        sentences=f"{RUN}/sentences.jsonl",
        quarantine=f"{RUN}/sentences_quarantine.csv",
    log:
        f"{LOGS}/sentences.log",
    params:
        cfg=section_json("sentences"),
    conda:
        "../../environment.yml"
    shell:
        "simcrop sentences --set-json {params.cfg:q} --manifest {input.manifest} --out {output.sentences}"
        " --quarantine {output.quarantine} > {log} 2>&1"
