"""test_gpu_device_run.py - scripts/gpu_device_run.sh without a GPU: cuBLAS found by its versioned
file and linked by path (or left out), the files --run leaves (8 at most come back from the device
machine), its time budget with a slow stage, and --dry-run's command lines. A fake nvcc, harness and
compute-sanitizer stand in for the toolkit; the real build is checked by hand (docs/GPU.md)."""
import os
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
import time
import unittest

SRC = os.environ.get("SVDSLICE_SOURCE_DIR") or os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(SRC, "scripts", "gpu_device_run.sh")


def read(path):
    with open(path) as fh:
        return fh.read()


def write_exe(path, body):
    with open(path, "w") as fh:
        fh.write("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    os.chmod(path, 0o755)


class DeviceRun(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="gpu-device-run-")
        self.cuda = os.path.join(self.tmp, "cuda")
        os.makedirs(os.path.join(self.cuda, "bin"))
        os.makedirs(os.path.join(self.cuda, "lib64"))
        self.args_log = os.path.join(self.tmp, "nvcc-args")
        # A fake nvcc: --version like CUDA 13's; a compile records its arguments
        # and writes the -o file; it fails when FAIL_CUBLAS_LINK is set and a
        # cuBLAS library is among them (a link that does not work).
        write_exe(os.path.join(self.cuda, "bin", "nvcc"), f"""\
            if [ "$1" = --version ]; then echo "Cuda compilation tools, release 13.0, V13.0.88"; exit 0; fi
            echo "$*" >> '{self.args_log}'
            if [ -n "${{FAIL_CUBLAS_LINK:-}}" ] && [[ "$*" == *libcublas* ]]; then echo "undefined reference" >&2; exit 1; fi
            while [ $# -gt 0 ]; do [ "$1" = -o ] && {{ : > "$2"; chmod +x "$2"; }}; shift; done
            """)
        self.env = dict(os.environ, NVCC=os.path.join(self.cuda, "bin", "nvcc"), SS_CUBLAS_SYSTEM_DIRS="",
                        CUDA_ARCH="sm_90")
        self.env.pop("OUT", None)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def script(self, *args, env=None, timeout=120):
        p = subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                           env=env or self.env, cwd=self.tmp)
        return p.returncode, p.stdout, p.stderr

    def lib(self, name, target=None):
        path = os.path.join(self.cuda, "lib64", name)
        if target:
            os.symlink(target, path)
        else:
            open(path, "wb").close()
        return path

    def test_find_cublas_takes_the_toolkits_versioned_file(self):
        # No unversioned libcublas.so, an older major beside it: the 13 files are taken.
        real = self.lib("libcublas.so.13.1.0.3")
        real_lt = self.lib("libcublasLt.so.13.1.0.3")
        self.lib("libcublas.so.12.9.1")
        self.lib("libcublasLt.so.12.9.1")
        rc, out, err = self.script("--find-cublas")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.split(), [real, real_lt, os.path.join(self.cuda, "lib64")])

    def test_find_cublas_in_pips_layout_beside_a_pip_nvcc(self):
        # nvidia/cuda_nvcc/bin/nvcc with nvidia/cublas/{lib,include} beside it.
        nv = os.path.join(self.tmp, "site", "nvidia")
        os.makedirs(os.path.join(nv, "cuda_nvcc", "bin"))
        os.makedirs(os.path.join(nv, "cublas", "lib"))
        os.makedirs(os.path.join(nv, "cublas", "include"))
        shutil.copy(os.path.join(self.cuda, "bin", "nvcc"), os.path.join(nv, "cuda_nvcc", "bin", "nvcc"))
        for name in ("libcublas.so.13", "libcublasLt.so.13", os.path.join("..", "include", "cublas_v2.h")):
            open(os.path.join(nv, "cublas", "lib", name), "wb").close()
        env = dict(self.env, NVCC=os.path.join(nv, "cuda_nvcc", "bin", "nvcc"))
        rc, out, err = self.script("--find-cublas", env=env)
        self.assertEqual(rc, 0, err)
        lib = os.path.join(nv, "cublas", "lib")
        self.assertEqual(out.split(), [os.path.join(lib, "libcublas.so.13"), os.path.join(lib, "libcublasLt.so.13"),
                                       lib, os.path.join(nv, "cublas", "include")])
        rc, out, err = self.script("--build", os.path.join(self.tmp, "harness"), env=env)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"-I{os.path.join(nv, 'cublas', 'include')}", read(self.args_log))

    def test_find_cublas_none(self):
        self.lib("libcublas.so.13.1.0.3")  # no cuBLASLt beside it: not linkable
        rc, out, _ = self.script("--find-cublas")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")

    def test_build_links_cublas_by_path_with_soname_links(self):
        real = self.lib("libcublas.so.13.1.0.3")
        real_lt = self.lib("libcublasLt.so.13.1.0.3")
        binp = os.path.join(self.tmp, "h", "harness")
        rc, out, err = self.script("--build", binp)
        self.assertEqual(rc, 0, err)
        self.assertIn("(cuda and cublas)", out)
        calls = read(self.args_log).splitlines()
        self.assertEqual(len(calls), 1)
        self.assertIn(f"-Xlinker {real} -Xlinker {real_lt}", calls[0])
        self.assertNotIn("-lcublas", calls[0])
        self.assertNotIn("SS_GPU_NO_CUBLAS", calls[0])
        self.assertIn("-Xptxas -v", calls[0])
        self.assertIn("-DSS_GPU_FAULT_INJECTION", calls[0])  # the harness's failure-policy check
        # Only versioned files: the binary's SONAME names are made beside it, on the rpath.
        links = os.path.join(self.tmp, "h", "cublas-links")
        self.assertEqual(os.path.realpath(os.path.join(links, "libcublas.so.13")), real)
        self.assertEqual(os.path.realpath(os.path.join(links, "libcublasLt.so.13")), real_lt)
        self.assertIn(f"-rpath={links}", calls[0])
        self.assertIn(f"-rpath={os.path.join(self.cuda, 'lib64')}", calls[0])

    def test_build_with_soname_files_needs_no_links(self):
        real = self.lib("libcublas.so.13.1.0.3")
        self.lib("libcublas.so.13", real)
        real_lt = self.lib("libcublasLt.so.13.1.0.3")
        self.lib("libcublasLt.so.13", real_lt)
        binp = os.path.join(self.tmp, "h", "harness")
        rc, _, err = self.script("--build", binp)
        self.assertEqual(rc, 0, err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "h", "cublas-links")))
        self.assertIn(f"-Xlinker {real}", read(self.args_log))

    def test_build_without_cublas_checks_our_kernel(self):
        rc, out, err = self.script("--build", os.path.join(self.tmp, "harness"))
        self.assertEqual(rc, 0, err)
        self.assertIn("cuBLAS missing", out)
        calls = read(self.args_log).splitlines()
        self.assertEqual(len(calls), 1)
        self.assertIn("-DSS_GPU_NO_CUBLAS", calls[0])
        self.assertIn("gpu/recon.cu", calls[0])
        self.assertNotIn("libcublas", calls[0])

    def test_build_falls_back_when_the_link_fails(self):
        self.lib("libcublas.so.13.1.0.3")
        self.lib("libcublasLt.so.13.1.0.3")
        rc, out, err = self.script("--build", os.path.join(self.tmp, "harness"),
                                   env=dict(self.env, FAIL_CUBLAS_LINK="1"))
        self.assertEqual(rc, 0, err)
        calls = read(self.args_log).splitlines()
        self.assertEqual(len(calls), 2)
        self.assertIn("libcublas", calls[0])
        self.assertIn("-DSS_GPU_NO_CUBLAS", calls[1])
        self.assertIn("linking", out)
        self.assertIn("cuda only: cuBLAS missing", out)

    def fake_tools(self, harness_sleep, sanitizer_sleep):
        harness = os.path.join(self.tmp, "fake-harness")
        # Prints figures at once, then takes its time (a slow stage); writes its
        # results file as the real one does.
        write_exe(harness, f"""\
            echo "device: FakeGPU, sm_90" | tee "$2"
            echo "checks: 10 passed, 0 failed (backends: cuda, cublas)" | tee -a "$2"
            echo "volume cuda   device 0.1234 ms (min 0.1200), wall 0.5 ms" | tee -a "$2"
            [ "${{3:-}}" = --checks-only ] && {{ sleep {sanitizer_sleep}; exit 0; }}
            sleep {harness_sleep}
            echo "crossover_work=16777216" | tee -a "$2"
            """)
        san = os.path.join(self.tmp, "fake-sanitizer")
        write_exe(san, f"""\
            if [ "$1" = --help ]; then echo "  --kernel-name arg   kernels to check"; exit 0; fi
            echo "args: $*"
            while [ $# -gt 0 ] && ! {{ [ -f "$1" ] && [ -x "$1" ]; }}; do shift; done  # up to the program
            "$@"
            echo "========= ERROR SUMMARY: 0 errors"
            """)
        return harness, san

    def run_device(self, budget, harness_sleep, sanitizer_sleep):
        harness, san = self.fake_tools(harness_sleep, sanitizer_sleep)
        out = os.path.join(self.tmp, "out")
        env = dict(self.env, OUT=out, SS_DEVICE_HARNESS=harness, SS_DEVICE_SANITIZER=san,
                   SS_DEVICE_BUDGET_S=str(budget), SS_DEVICE_RESERVE_S="2", SS_DEVICE_MIN_STAGE_S="3",
                   SS_DEVICE_CTEST="0", PATH="/usr/bin:/bin")
        t0 = time.monotonic()
        rc, stdout, err = self.script("--run", os.path.join(self.tmp, "no-inputs"), env=env, timeout=budget + 60)
        return rc, stdout, err, time.monotonic() - t0, out

    def test_run_leaves_two_files_and_keeps_its_budget(self):
        budget = 24
        rc, stdout, err, took, out = self.run_device(budget, harness_sleep=60, sanitizer_sleep=5)
        files = sorted(os.listdir(out))
        self.assertEqual(files, ["gpu_logs.tar.gz", "gpu_results.txt"], stdout + err)
        self.assertLessEqual(len(files), 8)
        self.assertLess(took, budget + 5, stdout)
        # The slow harness was cut at half of what was left, its early figures kept.
        self.assertRegex(stdout, r"stage harness: stopped after (9|10|11)s \(time limit\)")
        self.assertIn("volume cuda   device 0.1234 ms", stdout)
        self.assertNotIn("crossover_work", stdout)
        results = read(os.path.join(out, "gpu_results.txt"))
        self.assertIn("volume cuda   device 0.1234 ms", results)
        # Sanitizer caps come from what is left: the slow ones hit their limit,
        # and the last is skipped rather than overrunning the budget.
        self.assertIn("compute-sanitizer memcheck: exit 124", stdout)
        self.assertIn("compute-sanitizer synccheck: skipped (time budget)", stdout)
        self.assertIn("ctest GPU tests: not run (missing: none: SS_DEVICE_CTEST=0)", stdout)
        # The summary at the end repeats the figures (the device tool returns the output's tail).
        tail = stdout[stdout.index("===== summary"):]
        self.assertIn("volume cuda   device 0.1234 ms", tail)
        self.assertIn("stage harness: exit 124", tail)
        with tarfile.open(os.path.join(out, "gpu_logs.tar.gz")) as tf:
            names = {os.path.basename(n) for n in tf.getnames()}
        self.assertIn("harness.txt", names)
        self.assertIn("sanitizer-memcheck.txt", names)
        self.assertIn("sanitizer-initcheck.txt", names)

    def test_run_with_time_to_spare_runs_every_tool_on_our_kernels(self):
        rc, stdout, err, took, out = self.run_device(60, harness_sleep=0, sanitizer_sleep=0)
        self.assertEqual(rc, 0, stdout + err)
        self.assertEqual(len(os.listdir(out)), 2)
        for tool in ("memcheck", "racecheck", "initcheck", "synccheck"):
            self.assertRegex(stdout, rf"compute-sanitizer {tool}: exit 0 .*ERROR SUMMARY: 0 errors")
        self.assertIn("crossover_work=16777216", stdout)
        with tarfile.open(os.path.join(out, "gpu_logs.tar.gz")) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("sanitizer-memcheck.txt"))
            log = tf.extractfile(member).read().decode()
        self.assertIn("--kernel-name kns=svdslice_ --leak-check full", log)

    def test_a_refused_sanitizer_stops_the_other_tools(self):
        harness, _ = self.fake_tools(0, 0)
        san = os.path.join(self.tmp, "refusing-sanitizer")
        write_exe(san, """\
            [ "$1" = --help ] && { echo "--kernel-name"; exit 0; }
            echo "========= Error: Device not supported"; exit 1
            """)
        out = os.path.join(self.tmp, "out")
        env = dict(self.env, OUT=out, SS_DEVICE_HARNESS=harness, SS_DEVICE_SANITIZER=san, SS_DEVICE_CTEST="0",
                   PATH="/usr/bin:/bin")
        rc, stdout, err = self.script("--run", env=env)
        self.assertEqual(rc, 0, stdout + err)
        self.assertIn("compute-sanitizer memcheck: exit 1", stdout)
        self.assertIn("compute-sanitizer: refused here (========= Error: Device not supported); the other tools skipped",
                      stdout)
        self.assertNotIn("compute-sanitizer racecheck", stdout)

    def test_dry_run_shows_the_commands(self):
        self.lib("libcublas.so.13.1.0.3")
        self.lib("libcublasLt.so.13.1.0.3")
        out = os.path.join(self.tmp, "out")
        env = dict(self.env, OUT=out, SS_DEVICE_SANITIZER="/bin/false", SS_DEVICE_CTEST="0", PATH="/usr/bin:/bin")
        rc, stdout, err = self.script("--dry-run", env=env)
        self.assertEqual(rc, 0, stdout + err)
        self.assertFalse(os.path.exists(self.args_log))  # nothing compiled
        self.assertIn("[dry-run]", stdout)
        self.assertIn("libcublas.so.13.1.0.3", stdout)
        self.assertRegex(stdout, r"\[dry-run\] timeout \d+ \S+/harness ")
        for tool in ("memcheck", "racecheck", "initcheck", "synccheck"):
            self.assertRegex(stdout, rf"\[dry-run\] timeout \d+ /bin/false --tool {tool} --kernel-regex kns=svdslice_")
        self.assertLessEqual(len(os.listdir(out)), 8)


if __name__ == "__main__":
    unittest.main(verbosity=2)
