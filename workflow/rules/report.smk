# Figures for people: the README montage of cases, lesion outlines and the sentences that name them.
# Outputs marked report(...) here and in the other rule files make `snakemake --report report.html` one
# self-contained page: results table, figures, QC summary, and runtime/memory from the benchmark: files.


report: "../report/workflow.rst"


rule montage:
    input:
        manifest=RUN.manifest,
        sentences=RUN.sentences,
        qc=RUN.qc,
    output:
        png=report(RUN.montage, caption="../report/montage.rst", category="Data",
                   labels={"result": "montage of cases"}),
    log:
        RUN.log("montage"),
    params:
        cfg=section_json("show"),
        preprocessed=os.fspath(RUN.preprocessed),
    conda:
        "../../environment.yml"
    shell:
        "simcrop show --set-json {params.cfg:q} --manifest {input.manifest} --sentences {input.sentences}"
        " --preprocessed {params.preprocessed} --out {output.png} > {log} 2>&1"
