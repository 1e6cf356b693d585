"""benchmarks/benchlib.py: the machine kind that keys RESULTS.md tables tells AMD generations apart."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import benchlib  # noqa: E402


def _cpuinfo(vendor: str, family: int, model: int) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"


def test_amd_generation_names_zen_3_4_5_and_is_empty_elsewhere():
    assert benchlib.amd_generation(_cpuinfo("AuthenticAMD", 25, 1)) == " Zen 3 (family 25 model 1)"
    assert benchlib.amd_generation(_cpuinfo("AuthenticAMD", 25, 17)) == " Zen 4 (family 25 model 17)"
    assert benchlib.amd_generation(_cpuinfo("AuthenticAMD", 26, 2)) == " Zen 5 (family 26 model 2)"
    assert benchlib.amd_generation(_cpuinfo("AuthenticAMD", 31, 0)) == " (family 31 model 0)"
    assert benchlib.amd_generation(_cpuinfo("GenuineIntel", 6, 143)) == ""
    assert benchlib.amd_generation("") == ""


def test_write_table_replaces_only_its_own_machine_kind(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n")
    benchlib.write_table("Decoding", "fp32", "| a |\n", path)
    text = path.read_text()
    assert "| a |" in text and benchlib.machine_kind() in text
    other = text.replace(benchlib.machine_kind(), "Other CPU, 2 cores, avx2")
    path.write_text(other)
    benchlib.write_table("Decoding", "fp32", "| b |\n", path)
    text = path.read_text()
    assert "| a |" in text and "| b |" in text and text.count("Other CPU") >= 2
