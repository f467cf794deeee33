# Report sections → sentences with character offsets (spaCy).


rule sentences:
    input:
        manifest=RUN.manifest,
    output:
        sentences=RUN.sentences,
        quarantine=RUN.sentences_quarantine,
    log:
        RUN.log("sentences"),
    params:
        cfg=section_json("sentences"),
    conda:
        "../../environment.yml"
    shell:
        "simcrop sentences --set-json {params.cfg:q} --manifest {input.manifest} --out {output.sentences}"
        " --quarantine {output.quarantine} > {log} 2>&1"
