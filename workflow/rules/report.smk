# Figures for people: the README montage of cases, lesion outlines and the sentences that name them.


rule montage:
    input:
        manifest=f"{RUN}/manifest.csv",
        sentences=f"{RUN}/sentences.jsonl",
        qc=f"{RUN}/qc.csv",
    output:
        png=f"{RUN}/figures/montage.png",
    log:
        f"{LOGS}/montage.log",
    params:
        cfg=section_json("show"),
        preprocessed=f"{RUN}/preprocessed",
    shell:
        "simcrop show --set-json {params.cfg:q} --manifest {input.manifest} --sentences {input.sentences}"
        " --preprocessed {params.preprocessed} --out {output.png} > {log} 2>&1"
