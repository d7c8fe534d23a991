"""Tests of tinyqml.classical.mcu: the harness, size parsing, tool checks, host / sanitizer / QEMU builds.

The builds use a small hand-written int8 "model" following the code generator's API (a saturating
fixed-point dense layer with const weights and a static arena) and compare host, QEMU and numpy.
Tests needing a tool skip when it is absent, unless ``TINYQML_REQUIRE_MCU_TOOLS`` is set (then they fail).
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tinyqml.classical import errors
from tinyqml.classical import mcu
from tinyqml.classical.mcu import (
    CompileError,
    CortexM4Build,
    ElfSize,
    HostBuild,
    McuError,
    RunError,
    ToolchainError,
)


def _needs(*tools: str) -> pytest.MarkDecorator:
    have = mcu.tools_available()
    missing = [t for t in tools if not have[t]]
    required = bool(os.environ.get("TINYQML_REQUIRE_MCU_TOOLS"))
    return pytest.mark.skipif(bool(missing) and not required,
                              reason=f"needs {missing} (`make mcu-tools`; set TINYQML_REQUIRE_MCU_TOOLS to fail)")


HOST = _needs("gcc")
M4 = _needs("arm-none-eabi-gcc", "arm-none-eabi-size", "rdimon.specs", "qemu-system-arm")

IN, OUT, SHIFT = 24, 10, 6
_RNG = np.random.default_rng(7)
WEIGHTS = _RNG.integers(-128, 128, size=(OUT, IN)).astype(np.int8)
BIAS = _RNG.integers(-3000, 3000, size=OUT).astype(np.int32)


def _reference(x: np.ndarray) -> np.ndarray:
    """The toy model in numpy: relu-free saturating ``(W x + b) >> SHIFT`` in int32."""
    acc = x.astype(np.int32) @ WEIGHTS.T.astype(np.int32) + BIAS
    return np.clip(acc >> SHIFT, -128, 127).astype(np.int8)


def _c_list(values: np.ndarray) -> str:
    return ", ".join(str(int(v)) for v in values.ravel())


def _write_model(root: Path, *, body: str | None = None, arena: int = 64, out_size: int = OUT) -> Path:
    """Write model.h / model.c into ``root`` (the dense layer unless ``body`` replaces invoke's body)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.h").write_text(textwrap.dedent(f"""\
        #ifndef MODEL_H
        #define MODEL_H
        #include <stdint.h>
        #define TINYQML_INPUT_SIZE {IN}
        #define TINYQML_OUTPUT_SIZE {out_size}
        #define TINYQML_ARENA_BYTES {arena}
        int tinyqml_invoke(const int8_t *input, int8_t *output);
        #endif
        """))
    default = f"""
        int o, i;
        for (o = 0; o < TINYQML_OUTPUT_SIZE; ++o) {{
            int32_t acc = bias[o];
            for (i = 0; i < TINYQML_INPUT_SIZE; ++i) {{
                acc += (int32_t)weights[o][i] * (int32_t)input[i];
            }}
            acc >>= {SHIFT};
            arena[o] = (int8_t)(acc > 127 ? 127 : (acc < -128 ? -128 : acc));
        }}
        for (o = 0; o < TINYQML_OUTPUT_SIZE; ++o) {{
            output[o] = arena[o];
        }}
        return 0;"""
    rows = ", ".join("{ " + _c_list(row) + " }" for row in WEIGHTS)
    (root / "model.c").write_text(textwrap.dedent(f"""\
        #include "model.h"
        static const int8_t weights[{OUT}][TINYQML_INPUT_SIZE] = {{ {rows} }};
        static const int32_t bias[{OUT}] = {{ {_c_list(BIAS)} }};
        static int8_t arena[TINYQML_ARENA_BYTES];
        int tinyqml_invoke(const int8_t *input, int8_t *output)
        {{
            (void)weights; (void)bias; (void)arena; (void)input; (void)output;
            {textwrap.dedent(body if body is not None else default).strip()}
        }}
        """))
    return root / "model.c"


def _inputs(n: int = 6) -> np.ndarray:
    x = np.random.default_rng(1).integers(-128, 128, size=(n, IN)).astype(np.int8)
    x[0] = 127  # saturates high
    x[1:2] = -128
    return x


# ------------------------------------------------------------------------------- pure: harness text

def test_harness_main_holds_every_input_and_checks_sizes() -> None:
    x = np.arange(-60, 60, dtype=np.int8).reshape(3, 40)
    src = mcu.harness_main(x, output_size=5)
    assert "#define TINYQML_HARNESS_N 3" in src
    assert "#if TINYQML_INPUT_SIZE != 40" in src and "#if TINYQML_OUTPUT_SIZE != 5" in src
    body = src.split("tinyqml_inputs[TINYQML_HARNESS_N][TINYQML_INPUT_SIZE] = {", 1)[1].split("};", 1)[0]
    values = [int(v) for v in body.replace("{", " ").replace("}", " ").replace(",", " ").split()]
    assert values == x.ravel().tolist()


@pytest.mark.parametrize("bad", [np.zeros((2, 3), dtype=np.int16), np.zeros(3, dtype=np.int8),
                                 np.zeros((0, 3), dtype=np.int8), np.zeros((2, 0), dtype=np.int8)])
def test_harness_main_rejects_bad_inputs(bad: np.ndarray) -> None:
    with pytest.raises(McuError, match="int8 array"):
        mcu.harness_main(bad, 4)


def test_harness_main_rejects_empty_output() -> None:
    with pytest.raises(McuError, match="output_size"):
        mcu.harness_main(np.zeros((1, 2), dtype=np.int8), 0)


# ----------------------------------------------------------------------------- pure: output parsing

def test_parse_outputs_round_trip_ignores_other_lines() -> None:
    y = np.random.default_rng(3).integers(-128, 128, size=(4, 7)).astype(np.int8)
    text = "boot banner\n" + "".join(
        f"tinyqml-out {i}: {' '.join(map(str, row))}\n" for i, row in enumerate(y.tolist())) + "tinyqml-done 4\n"
    got = mcu.parse_outputs(text, 4, 7)
    assert got.dtype == np.int8 and got.shape == (4, 7)
    np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("text, match", [
    ("tinyqml-out 0: 1 2\ntinyqml-done 1\n", "2 values, expected 3"),
    ("tinyqml-out 0: 1 2 300\ntinyqml-done 1\n", "outside int8"),
    ("tinyqml-out 1: 1 2 3\ntinyqml-done 1\n", "row 1 where row 0"),
    ("tinyqml-out 0: 1 2 3\n", "without 'tinyqml-done 1'"),
    ("tinyqml-out 0: 1 2 3\ntinyqml-out 1: 1 2 3\ntinyqml-done 2\n", "expected 1 output rows, got 2"),
    ("tinyqml-error 0 returned -1\n", "model returned an error"),
])
def test_parse_outputs_rejects_malformed_output(text: str, match: str) -> None:
    with pytest.raises(RunError, match=match):
        mcu.parse_outputs(text, 1, 3)


# ------------------------------------------------------------------------ pure: sizes, tools, errors

def test_parse_size_reads_berkeley_format() -> None:
    text = "   text\t   data\t    bss\t    dec\t    hex\tfilename\n  31656\t   2500\t    240\t  34396\t   865c\tm.elf\n"
    size = mcu.parse_size(text)
    assert size == ElfSize(31656, 2500, 240)
    assert (size.flash, size.sram) == (34156, 2740)
    with pytest.raises(McuError, match="cannot read size"):
        mcu.parse_size("garbage\n")


def test_errors_are_compression_errors() -> None:
    for exc in (ToolchainError, CompileError, RunError):
        assert issubclass(exc, McuError) and issubclass(exc, errors.CompressionError)


def test_missing_tool_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    have = mcu.tools_available()
    assert set(have) == set(mcu.TOOL_PACKAGES) and not any(have.values())
    with pytest.raises(ToolchainError, match=r"make mcu-tools.*gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        mcu.require_tools("arm-none-eabi-gcc", "rdimon.specs")
    with pytest.raises(ToolchainError, match="qemu-system-arm"):
        mcu.run_qemu(tmp_path / "x.elf", timeout=5)
    with pytest.raises(ToolchainError, match="unknown tool"):
        mcu.require_tools("clang")


def test_run_harness_rejects_a_build_for_the_other_target(tmp_path: Path) -> None:
    with pytest.raises(McuError, match="takes a CortexM4Build"):
        mcu.run_harness([], [], _inputs(1), OUT, tmp_path, target="cortex-m4", build=HostBuild())
    with pytest.raises(McuError, match="unknown target"):
        mcu.run_harness([], [], _inputs(1), OUT, tmp_path, target="riscv")  # type: ignore[arg-type]


def test_support_files_are_shipped() -> None:
    build = CortexM4Build()
    assert build.startup.is_file() and build.linker_script.is_file()
    assert "Reset_Handler" in build.startup.read_text() and "0x20000000" in build.linker_script.read_text()


# --------------------------------------------------------------------------------------------- host

@HOST
def test_host_build_matches_numpy(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model")
    x = _inputs()
    run = mcu.run_harness([model], [model.parent], x, OUT, tmp_path / "build", target="host")
    np.testing.assert_array_equal(run.outputs, _reference(x))
    assert run.size is None and run.binary.is_file()


@HOST
def test_host_build_is_strict_and_reports_compiler_errors(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model", body="int unused; return 0;")  # -Wall -Werror: unused variable
    with pytest.raises(CompileError, match="unused"):
        mcu.run_harness([model], [model.parent], _inputs(1), OUT, tmp_path / "build", target="host")


@HOST
def test_harness_refuses_a_model_of_another_size(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model", out_size=OUT + 1)
    with pytest.raises(CompileError, match="TINYQML_OUTPUT_SIZE differs"):
        mcu.run_harness([model], [model.parent], _inputs(1), OUT, tmp_path / "build", target="host")


@HOST
def test_model_error_and_output_overrun_fail_the_run(tmp_path: Path) -> None:
    failing = _write_model(tmp_path / "fail", body="return input[0] == 5 ? 3 : 0;")
    x = _inputs(3)
    x[2, 0] = 5
    with pytest.raises(RunError, match="tinyqml-error 2 returned 3"):
        mcu.run_harness([failing], [failing.parent], x, OUT, tmp_path / "b1", target="host")
    overrun = _write_model(tmp_path / "over", body="output[TINYQML_OUTPUT_SIZE] = 0; return 0;")
    with pytest.raises(RunError, match="wrote outside its output"):
        mcu.run_harness([overrun], [overrun.parent], x, OUT, tmp_path / "b2", target="host")


@HOST
def test_host_run_timeout_is_enforced(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model", body="for (;;) { __asm__ volatile(\"\"); }")
    with pytest.raises(RunError, match="timed out after 1 s"):
        mcu.run_harness([model], [model.parent], _inputs(1), OUT, tmp_path / "build", target="host", timeout=1)


@HOST
def test_sanitized_host_build_is_clean_and_catches_out_of_bounds(tmp_path: Path) -> None:
    sanitized = HostBuild(sanitize=True)
    model = _write_model(tmp_path / "model")
    x = _inputs()
    run = mcu.run_harness([model], [model.parent], x, OUT, tmp_path / "ok", build=sanitized)
    np.testing.assert_array_equal(run.outputs, _reference(x))
    # reading past the end of the const weights (an index the compiler cannot see): the sanitizers report it
    bad = _write_model(tmp_path / "bad", body="""
        volatile int k = 2 * TINYQML_INPUT_SIZE;
        int o;
        for (o = 0; o < TINYQML_OUTPUT_SIZE; ++o) {
            output[o] = weights[TINYQML_OUTPUT_SIZE - 1][k + o];
        }
        return 0;""")
    with pytest.raises(RunError, match="runtime error|AddressSanitizer"):
        mcu.run_harness([bad], [bad.parent], x[:1], OUT, tmp_path / "bad_build", build=sanitized)


# ------------------------------------------------------------------------------------- Cortex-M4

@HOST
@M4
def test_cortex_m4_under_qemu_matches_host_and_numpy(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model")
    x = _inputs(8)
    host = mcu.run_harness([model], [model.parent], x, OUT, tmp_path / "host", target="host")
    m4 = mcu.run_harness([model], [model.parent], x, OUT, tmp_path / "m4", target="cortex-m4")
    np.testing.assert_array_equal(m4.outputs, host.outputs)
    np.testing.assert_array_equal(m4.outputs, _reference(x))
    assert m4.size is not None and m4.size.text > WEIGHTS.size + 4 * BIAS.size
    assert m4.size.flash == m4.size.text + m4.size.data and m4.size.sram == m4.size.data + m4.size.bss


@M4
def test_cortex_m4_sizes_put_weights_in_flash_and_arena_in_sram(tmp_path: Path) -> None:
    sizes = {}
    for arena in (64, 8192):
        model = _write_model(tmp_path / f"m{arena}", arena=arena)
        harness = model.parent / "harness.c"
        harness.write_text(mcu.harness_main(_inputs(1), OUT))
        elf = mcu.compile_cortex_m4([harness, model], [model.parent], tmp_path / f"m{arena}.elf")
        sizes[arena] = mcu.elf_size(elf)
    assert sizes[8192].bss - sizes[64].bss >= 8192 - 64
    assert sizes[8192].text == sizes[64].text and sizes[8192].data == sizes[64].data
    assert sizes[64].text > WEIGHTS.size + 4 * BIAS.size  # const weights count in flash, not in .data
    alone = mcu.object_size([tmp_path / "m8192" / "model.c"], [tmp_path / "m8192"], tmp_path / "objects")
    assert WEIGHTS.size + 4 * BIAS.size < alone.text < WEIGHTS.size + 4 * BIAS.size + 512
    assert alone.data == 0 and alone.bss == 8192


@M4
def test_cortex_m4_fault_and_exit_status_end_qemu(tmp_path: Path) -> None:
    faulting = _write_model(tmp_path / "fault", body="""
        void (*jump)(void) = (void (*)(void))(uintptr_t)0x30000001u;  /* no memory there: a fault */
        jump();
        return 0;""")
    with pytest.raises(RunError, match=r"exit status 1(.|\n)*tinyqml-fault exception 003"):
        mcu.run_harness([faulting], [faulting.parent], _inputs(1), OUT, tmp_path / "b1", target="cortex-m4",
                        timeout=10)
    failing = _write_model(tmp_path / "fail", body="return -2;")
    with pytest.raises(RunError, match="tinyqml-error 0 returned -2"):
        mcu.run_harness([failing], [failing.parent], _inputs(1), OUT, tmp_path / "b2", target="cortex-m4",
                        timeout=10)


@M4
def test_cortex_m4_qemu_timeout_is_enforced(tmp_path: Path) -> None:
    model = _write_model(tmp_path / "model", body="for (;;) { __asm__ volatile(\"\"); }")
    with pytest.raises(RunError, match="timed out after 1 s"):
        mcu.run_harness([model], [model.parent], _inputs(1), OUT, tmp_path / "build", target="cortex-m4",
                        timeout=1)


@M4
def test_cortex_m4_fpu_is_enabled(tmp_path: Path) -> None:
    """Hard-float code runs (an FPU left disabled would fault with a UsageFault)."""
    model = _write_model(tmp_path / "model", body="""
        volatile float scale = 0.5f;
        int o;
        for (o = 0; o < TINYQML_OUTPUT_SIZE; ++o) {
            output[o] = (int8_t)((float)input[o] * scale);
        }
        return 0;""")
    x = _inputs(2)
    build = replace(CortexM4Build(), flags=(*CortexM4Build().flags, "-O0"))
    run = mcu.run_harness([model], [model.parent], x, OUT, tmp_path / "build", target="cortex-m4", build=build)
    np.testing.assert_array_equal(run.outputs, np.trunc(x[:, :OUT] * 0.5).astype(np.int8))
