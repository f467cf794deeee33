# Figures for people: the README montage of cases, lesion outlines and the sentences that name them.
# Outputs marked report(...) here and in the other rule files make `snakemake --report report.html` one
# self-contained page: results table, figures, QC summary, and runtime/memory from the benchmark: files.


report: "../report/workflow.rst"


rule montage:
    input:
        manifest=f"{RUN}/manifest.csv",
        sentences=f"{RUN}/sentences.jsonl",
        qc=f"{RUN}/qc.csv",
    output:
        png=report(f"{RUN}/figures/montage.png", caption="../report/montage.rst", category="Data",
                   labels={"result": "montage of cases"}),
    log:
        f"{LOGS}/montage.log",
    params:
        cfg=section_json("show"),
        preprocessed=f"{RUN}/preprocessed",
    conda:
        "../../environment.yml"
    shell:
        "simcrop show --set-json {params.cfg:q} --manifest {input.manifest} --sentences {input.sentences}"
        " --preprocessed {params.preprocessed} --out {output.png} > {log} 2>&1"
