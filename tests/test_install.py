"""scripts/tools/install.sh and requirements.txt: a GPU machine gets exactly the stack the GPU numbers were
measured with, a CPU machine torch's CPU build and none of the GPU-only packages. pip is replaced by a stub
that records what it was asked to install."""

import os
import shutil
import subprocess

from conftest import ROOT

MEASURED = {"torch": "2.11.0+cu130", "triton": "3.6.0", "fla-core": "0.6.0", "flash-linear-attention": "0.6.0",
            "flash-qla": "0.1.3", "tilelang": "0.1.15", "apache-tvm-ffi": "0.1.12", "torch-c-dlpack-ext": "0.1.5",
            "z3-solver": "4.15.4.0", "zstandard": "0.25.0"}
GPU_ONLY = ("fla-core", "flash-linear-attention", "flash-qla", "tilelang", "apache-tvm-ffi", "torch-c-dlpack-ext",
            "z3-solver")


def requirement_lines() -> list[str]:
    return [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]


def install_args(tmp_path, gpu: bool) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("grep", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    (bin_dir / "python3").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    if gpu:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    subprocess.run([shutil.which("bash"), str(ROOT / "scripts/tools/install.sh")], env={"PATH": str(bin_dir)},
                   check=True, timeout=60)
    return (tmp_path / "args").read_text().split()


def test_requirements_pin_the_measured_gpu_stack_one_package_a_line():
    lines = requirement_lines()
    assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cu130"  # where torch's +cu130 build is
    pins = dict(line.split("==") for line in lines[1:])
    assert all(" " not in line for line in lines[1:])  # no inline comment: install.sh reads each line as a name
    assert {k: pins.get(k) for k in MEASURED} == MEASURED


def test_a_gpu_machine_installs_the_requirements_as_pinned(tmp_path):
    assert install_args(tmp_path, gpu=True) == ["-m", "pip", "install", "-r", "requirements.txt", "pytest==9.0.3"]


def test_a_cpu_machine_gets_torch_cpu_and_none_of_the_gpu_only_packages(tmp_path):
    args = install_args(tmp_path, gpu=False)
    assert args[:5] == ["-m", "pip", "install", "torch==2.13.0+cpu", "triton==3.7.1"] and args[-1] == "pytest==9.0.3"
    rest = args[5:-1]
    assert not [a for a in rest if a.startswith(("-", "torch", "triton", *GPU_ONLY))]
    kept = [line for line in requirement_lines()[1:] if not line.startswith(("torch", "triton", *GPU_ONLY))]
    assert rest == kept and "sentencepiece==0.2.3" in rest


def test_the_readme_installs_the_pod_from_the_requirements():
    section = (ROOT / "README.md").read_text().split("\n## The real run", 1)[1].split("\n## ", 1)[0]
    assert "pip install -r requirements.txt" in section and "torch 2.11.0+cu130" in section
