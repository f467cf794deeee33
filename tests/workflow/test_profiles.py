"""The SLURM profile only uses options Snakemake knows, for rules that exist (no cluster needed)."""
import re

import yaml
from snakemake.cli import get_argument_parser


def test_slurm_profile_keys_are_snakemake_options(repo_root):
    profile = yaml.safe_load((repo_root / "config" / "profiles" / "slurm" / "config.yaml").read_text())
    known = set(get_argument_parser()._option_string_actions)
    unknown = [key for key in profile if f"--{key}" not in known]
    assert not unknown, unknown
    assert profile["executor"] == "slurm"


def test_slurm_profile_names_existing_rules(repo_root):
    profile = yaml.safe_load((repo_root / "config" / "profiles" / "slurm" / "config.yaml").read_text())
    rule_text = "".join(p.read_text() for p in (repo_root / "workflow").rglob("*.smk"))
    rule_text += (repo_root / "workflow" / "Snakefile").read_text()
    rules = set(re.findall(r"^(?:rule|checkpoint) (\w+):", rule_text, flags=re.M))
    named = set(profile.get("set-resources", {})) | set(profile.get("set-threads", {}))
    assert named and named <= rules, named - rules
