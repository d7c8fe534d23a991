"""Build and run C for a microcontroller: a host build, a Cortex-M4 build run under QEMU, and a test harness.

The same C sources compile twice. :func:`compile_host` gives a host executable (optionally with
``-fsanitize=address,undefined``); :func:`compile_cortex_m4` gives an ELF for QEMU's ``mps2-an386``
board (a Cortex-M4 with FPU), linked with the start-up code and linker script in ``mcu_support/``
and newlib's semihosting library (``--specs=rdimon.specs``), so ``printf`` reaches QEMU's stdout.
:func:`run_host` and :func:`run_qemu` return what the program printed and raise :class:`RunError`
on a non-zero exit, a fault or a timeout. :func:`elf_size` reads ``arm-none-eabi-size`` (:func:`object_size`: the model's objects alone).

The harness drives a model that follows the code generator's API (``model.h`` declares
``int tinyqml_invoke(const int8_t *input, int8_t *output);`` and the macros
``TINYQML_INPUT_SIZE`` / ``TINYQML_OUTPUT_SIZE``): :func:`harness_main` writes a ``main.c`` holding
N int8 input vectors that prints one line per output vector, and :func:`parse_outputs` reads
them back as an int8 array ``[N, output_size]``. :func:`run_harness` does all of it for one target.

>>> import numpy as np
>>> src = harness_main(np.array([[1, -2], [3, 4]], dtype=np.int8), output_size=3)
>>> "tinyqml_invoke(tinyqml_inputs[i], output)" in src
True
>>> parse_outputs("tinyqml-out 0: 1 2 3\\ntinyqml-out 1: -128 0 127\\ntinyqml-done 2\\n", 2, 3)
array([[   1,    2,    3],
       [-128,    0,  127]], dtype=int8)

The tools come from Debian's ``gcc``, ``gcc-arm-none-eabi``, ``libnewlib-arm-none-eabi`` and
``qemu-system-arm`` packages (``make mcu-tools`` installs them); a missing one raises
:class:`ToolchainError` naming the package.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from tinyqml.classical.errors import CompressionError

__all__ = [
    "McuError", "ToolchainError", "CompileError", "RunError",
    "HostBuild", "CortexM4Build", "ElfSize", "SUPPORT_DIR", "TOOL_PACKAGES", "SANITIZE_FLAGS", "sanitizer_report",
    "HarnessRun", "tools_available", "require_tools", "compile_object", "compile_host", "compile_cortex_m4", "run_host",
    "qemu_command", "run_qemu", "elf_size", "object_size", "parse_size", "harness_main", "parse_outputs", "run_harness",
]

log = logging.getLogger(__name__)

#: start-up code (vector table, reset handler) and linker script for the mps2-an386 board
SUPPORT_DIR = Path(__file__).resolve().parent / "mcu_support"

#: each tool (or newlib's semihosting specs file) and the Debian package that provides it
TOOL_PACKAGES: dict[str, str] = {
    "gcc": "gcc",
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "rdimon.specs": "libnewlib-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
}

#: what ``HostBuild(sanitize=True)`` adds: ASan and UBSan, the first report aborting the program (gcc's
#: libasan / libubsan come with Debian's ``gcc`` through ``libgcc-<version>-dev``)
SANITIZE_FLAGS: tuple[str, ...] = ("-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                                   "-fno-omit-frame-pointer")

#: how AddressSanitizer, LeakSanitizer and UBSan reports start (they print them on stderr)
_SANITIZER_REPORT = re.compile(r"^.*(?:runtime error: |==\d+==ERROR: (?:Address|Leak)Sanitizer|"
                               r"SUMMARY: (?:Address|Leak|UndefinedBehavior)Sanitizer).*$", re.MULTILINE)

_PROBE_TIMEOUT = 30.0


class McuError(CompressionError):
    """Base of the errors raised while building or running C for a microcontroller."""


class ToolchainError(McuError):
    """A compiler, emulator or library that is not installed; the message says what to install."""


class CompileError(McuError):
    """The compiler or linker failed; the message holds the command and its stderr."""


class RunError(McuError):
    """A program that exited non-zero, faulted, timed out or printed an unexpected result."""


@dataclass(frozen=True)
class HostBuild:
    """Host compiler settings; ``sanitize`` adds AddressSanitizer and UBSan (:data:`SANITIZE_FLAGS`:
    aborting on the first report).

    >>> HostBuild(sanitize=True).command_flags()[-3:]
    ('-fsanitize=address,undefined', '-fno-sanitize-recover=all', '-fno-omit-frame-pointer')
    >>> HostBuild(sanitize=True).command_flags() == HostBuild().flags + SANITIZE_FLAGS
    True
    """

    cc: str = "gcc"
    flags: tuple[str, ...] = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2")
    libs: tuple[str, ...] = ("-lm",)
    sanitize: bool = False

    def command_flags(self) -> tuple[str, ...]:
        """The compiler flags, sanitizer flags included."""
        return self.flags + (SANITIZE_FLAGS if self.sanitize else ())


@dataclass(frozen=True)
class CortexM4Build:
    """Cross-compiler settings for the Cortex-M4 (hard float, FPv4-SP) on QEMU's mps2-an386.

    >>> "-mcpu=cortex-m4" in CortexM4Build().flags
    True
    """

    cc: str = "arm-none-eabi-gcc"
    flags: tuple[str, ...] = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
                              "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16",
                              "-ffunction-sections", "-fdata-sections")
    link_flags: tuple[str, ...] = ("-nostartfiles", "--specs=rdimon.specs", "-Wl,--gc-sections")
    libs: tuple[str, ...] = ("-lm",)
    startup: Path = field(default=SUPPORT_DIR / "startup.c")
    linker_script: Path = field(default=SUPPORT_DIR / "mps2_an386.ld")
    size_tool: str = "arm-none-eabi-size"


@dataclass(frozen=True)
class ElfSize:
    """Section totals of an ELF in ``arm-none-eabi-size``'s Berkeley format (bytes).

    ``flash`` is text (code, rodata, const weights, vector table) plus the initial values of .data;
    ``sram`` is the static SRAM, .data plus .bss (the arena); stack and heap come on top.

    >>> s = ElfSize(text=1000, data=8, bss=4096)
    >>> s.flash, s.sram
    (1008, 4104)
    """

    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def sram(self) -> int:
        return self.data + self.bss


# --------------------------------------------------------------------------------------------- tools

def _newlib_present(cc: str) -> bool:
    """Whether the cross-compiler finds newlib's ``rdimon.specs`` (it echoes the bare name when not)."""
    try:
        done = subprocess.run([cc, "-print-file-name=rdimon.specs"], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("probing %s for rdimon.specs failed: %s", cc, exc)
        return False
    return done.returncode == 0 and Path(done.stdout.strip()).is_absolute()


def tools_available() -> dict[str, bool]:
    """Which of :data:`TOOL_PACKAGES` are installed (tools on PATH; newlib via the cross-compiler).

    >>> sorted(tools_available()) == sorted(TOOL_PACKAGES)
    True
    """
    found = {name: shutil.which(name) is not None for name in TOOL_PACKAGES if name != "rdimon.specs"}
    found["rdimon.specs"] = found["arm-none-eabi-gcc"] and _newlib_present("arm-none-eabi-gcc")
    return {name: found[name] for name in TOOL_PACKAGES}


def require_tools(*names: str) -> None:
    """Raise :class:`ToolchainError` unless every named tool is installed; the message says how to get it.

    >>> require_tools()  # nothing asked, nothing missing
    """
    unknown = [n for n in names if n not in TOOL_PACKAGES]
    if unknown:
        raise ToolchainError(f"unknown tool(s) {unknown}; known: {sorted(TOOL_PACKAGES)}")
    if not names:
        return
    have = tools_available()
    missing = [n for n in names if not have[n]]
    if missing:
        packages = " ".join(dict.fromkeys(TOOL_PACKAGES[n] for n in missing))
        raise ToolchainError(f"missing {', '.join(missing)}: run `make mcu-tools`, or "
                             f"`apt-get install --no-install-recommends {packages}`")


def _run(cmd: Sequence[str], timeout: float, what: str, error: type[McuError],
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` (no shell) and return it; raise ``error`` with stdout/stderr on failure or timeout."""
    log.debug("%s: %s", what, " ".join(map(str, cmd)))
    try:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError as exc:
        raise ToolchainError(f"{what}: {cmd[0]} not found ({exc}); run `make mcu-tools`") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what} timed out after {timeout:g} s: {' '.join(map(str, cmd))}\n"
                    f"{_text(exc.stdout)}{_text(exc.stderr)}") from exc
    if done.returncode != 0:
        raise error(f"{what} failed with exit status {done.returncode}: {' '.join(map(str, cmd))}\n"
                    f"--- stderr ---\n{done.stderr}--- stdout ---\n{done.stdout[-4000:]}")
    return done


def _text(blob: bytes | str | None) -> str:
    if blob is None:
        return ""
    return blob.decode(errors="replace") if isinstance(blob, bytes) else blob


# ------------------------------------------------------------------------------------------- compile

def _compile(cc: str, flags: Sequence[str], sources: Sequence[Path], include_dirs: Sequence[Path],
             out: Path, tail: Sequence[str], timeout: float) -> Path:
    if not sources:
        raise CompileError("no C sources to compile")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, *flags, *(f"-I{d}" for d in include_dirs), *map(str, sources), "-o", str(out), *tail]
    _run(cmd, timeout, f"compiling {out.name}", CompileError)
    return out


def compile_object(source: Path, out: Path, build: "HostBuild | CortexM4Build", timeout: float = 120.0) -> Path:
    """Compile one C file to the object ``out`` (``-c``) with ``build``'s compiler and flags."""
    flags = build.command_flags() if isinstance(build, HostBuild) else build.flags
    return _compile(build.cc, [*flags, "-c"], [Path(source)], [], out, [], timeout)


def compile_host(sources: Sequence[Path], include_dirs: Sequence[Path], out: Path,
                 build: HostBuild = HostBuild(), timeout: float = 120.0) -> Path:
    """Compile and link ``sources`` into the host executable ``out`` and return its path."""
    if build.cc == "gcc":
        require_tools("gcc")
    return _compile(build.cc, build.command_flags(), sources, include_dirs, out, build.libs, timeout)


def compile_cortex_m4(sources: Sequence[Path], include_dirs: Sequence[Path], out: Path,
                      build: CortexM4Build = CortexM4Build(), timeout: float = 120.0) -> Path:
    """Cross-compile ``sources`` with the start-up code and linker script into the ELF ``out``."""
    if build.cc == "arm-none-eabi-gcc":
        require_tools("arm-none-eabi-gcc", "rdimon.specs")
    tail = [*build.link_flags, "-T", str(build.linker_script), *build.libs]
    return _compile(build.cc, build.flags, [*sources, build.startup], include_dirs, out, tail, timeout)


# ----------------------------------------------------------------------------------------------- run

def sanitizer_report(stderr: str) -> str | None:
    """The first line of an ASan / LSan / UBSan report in a program's ``stderr``, or ``None``.

    >>> sanitizer_report("m.c:7:9: runtime error: signed integer overflow: 2147483647 + 1\\n")
    'm.c:7:9: runtime error: signed integer overflow: 2147483647 + 1'
    >>> sanitizer_report("==12==ERROR: AddressSanitizer: global-buffer-overflow on address 0x5\\n")
    '==12==ERROR: AddressSanitizer: global-buffer-overflow on address 0x5'
    >>> sanitizer_report("tinyqml: nothing to report\\n") is None
    True
    """
    m = _SANITIZER_REPORT.search(stderr)
    return None if m is None else m.group(0).strip()


def run_host(exe: Path, timeout: float = 60.0) -> str:
    """Run a host executable; return its stdout. A non-zero exit raises :class:`RunError`, and so does a
    sanitizer report on stderr when the program still exited 0 (a build with ``-fsanitize-recover``)."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:halt_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    done = _run([Path(exe).resolve()], timeout, f"running {Path(exe).name}", RunError, env=env)
    report = sanitizer_report(done.stderr)
    if report is not None:
        raise RunError(f"running {Path(exe).name}: exit status 0 but a sanitizer report on stderr: {report}\n"
                       f"--- stderr ---\n{done.stderr[-4000:]}")
    return done.stdout


def qemu_command(elf: Path, board: str = "mps2-an386") -> list[str]:
    """The QEMU command line: no display, no serial, no monitor; semihosting output on stdout.

    >>> qemu_command(Path("m.elf"))[:3]
    ['qemu-system-arm', '-M', 'mps2-an386']
    """
    return ["qemu-system-arm", "-M", board, "-nographic", "-monitor", "none", "-serial", "null",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]


def run_qemu(elf: Path, timeout: float = 60.0, board: str = "mps2-an386") -> str:
    """Run an ELF under ``qemu-system-arm`` with semihosting; return its stdout.

    QEMU's exit status is the program's (``exit(main())``); a fault exits with 1. Either, or running
    past ``timeout`` seconds (QEMU is killed), raises :class:`RunError`.
    """
    require_tools("qemu-system-arm")
    return _run(qemu_command(Path(elf), board), timeout, f"running {Path(elf).name} on QEMU {board}",
                RunError).stdout


def parse_size(text: str) -> ElfSize:
    """Read the first row of ``size`` Berkeley output.

    >>> parse_size("   text    data     bss     dec     hex filename\\n  31656    2500     240   34396    865c m.elf\\n")
    ElfSize(text=31656, data=2500, bss=240)
    """
    lines = [ln.split() for ln in text.strip().splitlines()]
    if len(lines) < 2 or lines[0][:3] != ["text", "data", "bss"] or len(lines[1]) < 3:
        raise McuError(f"cannot read size output:\n{text}")
    text_b, data_b, bss_b = (int(v) for v in lines[1][:3])
    return ElfSize(text=text_b, data=data_b, bss=bss_b)


def elf_size(elf: Path, size_tool: str = "arm-none-eabi-size", timeout: float = 30.0) -> ElfSize:
    """Flash and SRAM of an ELF from ``arm-none-eabi-size -B -d``."""
    if size_tool == "arm-none-eabi-size":
        require_tools("arm-none-eabi-size")
    return parse_size(_run([size_tool, "-B", "-d", str(elf)], timeout, f"sizing {Path(elf).name}",
                           McuError).stdout)


def object_size(sources: Sequence[Path], include_dirs: Sequence[Path], workdir: Path,
                build: CortexM4Build = CortexM4Build(), timeout: float = 120.0) -> ElfSize:
    """Summed sizes of ``sources`` compiled (``-c``) for the Cortex-M4: the model alone, without the
    harness, start-up code and newlib (before ``--gc-sections``, so an upper bound)."""
    if build.cc == "arm-none-eabi-gcc":
        require_tools("arm-none-eabi-gcc")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    total = ElfSize(0, 0, 0)
    for i, src in enumerate(sources):
        obj = workdir / f"{i}_{Path(src).stem}.o"
        _run([build.cc, *build.flags, *(f"-I{d}" for d in include_dirs), "-c", str(src), "-o", str(obj)],
             timeout, f"compiling {obj.name}", CompileError)
        part = elf_size(obj, build.size_tool)
        total = ElfSize(total.text + part.text, total.data + part.data, total.bss + part.bss)
    return total


# ------------------------------------------------------------------------------------------- harness

_OUT_LINE = re.compile(r"^tinyqml-out (\d+):((?: -?\d+)*)$")
_DONE_LINE = re.compile(r"^tinyqml-done (\d+)$")
_PER_LINE = 24


def _c_rows(inputs: np.ndarray) -> str:
    rows = []
    for vec in inputs:
        vals = [str(int(v)) for v in vec]
        chunks = [", ".join(vals[i:i + _PER_LINE]) for i in range(0, len(vals), _PER_LINE)]
        rows.append("    {\n        " + ",\n        ".join(chunks) + "\n    }")
    return ",\n".join(rows)


def harness_main(inputs: np.ndarray, output_size: int, header: str = "model.h") -> str:
    """C99 source of a ``main`` that calls ``tinyqml_invoke`` on each row of ``inputs`` (int8 ``[N, in_size]``).

    It prints ``tinyqml-out I: v0 v1 ...`` per vector and ``tinyqml-done N`` at the end, returns 1
    (after a ``tinyqml-error I ...`` line) when the model returns non-zero or writes into the guard
    bytes either side of its output, and fails to compile (``#error``)
    when ``model.h``'s sizes differ from ``inputs.shape[1]`` / ``output_size``.

    >>> print(harness_main(np.array([[5, -1]], dtype=np.int8), 1).splitlines()[3])
    #if TINYQML_INPUT_SIZE != 2
    """
    inputs = np.asarray(inputs)
    if inputs.dtype != np.int8 or inputs.ndim != 2 or inputs.shape[0] < 1 or inputs.shape[1] < 1:
        raise McuError(f"harness inputs must be a non-empty int8 array [N, input_size], "
                       f"got {inputs.dtype} {inputs.shape}")
    if int(output_size) < 1:
        raise McuError(f"output_size must be positive, got {output_size}")
    n, size = inputs.shape
    return f"""#include <stdint.h>
#include <stdio.h>
#include "{header}"
#if TINYQML_INPUT_SIZE != {size}
#error "tinyqml harness: TINYQML_INPUT_SIZE differs from the harness inputs ({size})"
#endif
#if TINYQML_OUTPUT_SIZE != {int(output_size)}
#error "tinyqml harness: TINYQML_OUTPUT_SIZE differs from the harness output size ({int(output_size)})"
#endif

#define TINYQML_HARNESS_N {n}

static const int8_t tinyqml_inputs[TINYQML_HARNESS_N][TINYQML_INPUT_SIZE] = {{
{_c_rows(inputs)}
}};

#define TINYQML_GUARD 16
#define TINYQML_GUARD_BYTE(k) ((int8_t)(((k) * 37 + 11) & 0x7f))
/* the output with guard bytes either side: a model writing past its output is reported */
static int8_t output_buf[TINYQML_GUARD + TINYQML_OUTPUT_SIZE + TINYQML_GUARD];
static int8_t *const output = output_buf + TINYQML_GUARD;

static int guards_intact(void)
{{
    int k;
    for (k = 0; k < TINYQML_GUARD; ++k) {{
        if (output_buf[k] != TINYQML_GUARD_BYTE(k)
            || output[TINYQML_OUTPUT_SIZE + k] != TINYQML_GUARD_BYTE(k)) {{
            return 0;
        }}
    }}
    return 1;
}}

int main(void)
{{
    int i, j, k;
    for (k = 0; k < TINYQML_GUARD; ++k) {{
        output_buf[k] = TINYQML_GUARD_BYTE(k);
        output[TINYQML_OUTPUT_SIZE + k] = TINYQML_GUARD_BYTE(k);
    }}
    for (i = 0; i < TINYQML_HARNESS_N; ++i) {{
        int rc = tinyqml_invoke(tinyqml_inputs[i], output);
        if (rc != 0) {{
            printf("tinyqml-error %d returned %d\\n", i, rc);
            return 1;
        }}
        if (!guards_intact()) {{
            printf("tinyqml-error %d wrote outside its output\\n", i);
            return 1;
        }}
        printf("tinyqml-out %d:", i);
        for (j = 0; j < TINYQML_OUTPUT_SIZE; ++j) {{
            printf(" %d", (int)output[j]);
        }}
        printf("\\n");
    }}
    printf("tinyqml-done %d\\n", TINYQML_HARNESS_N);
    return 0;
}}
"""


def parse_outputs(stdout: str, n: int, output_size: int) -> np.ndarray:
    """The int8 outputs ``[n, output_size]`` that a :func:`harness_main` program printed.

    Other lines are ignored; missing, repeated, out-of-order or out-of-range rows, a wrong row
    length or a missing ``tinyqml-done n`` raise :class:`RunError`.

    >>> parse_outputs("tinyqml-out 0: 7\\n", 1, 1)
    Traceback (most recent call last):
    ...
    tinyqml.classical.mcu.RunError: harness output ended without 'tinyqml-done 1' (1 of 1 rows read)
    """
    rows: list[list[int]] = []
    done = None
    for line in stdout.splitlines():
        line = line.strip()
        if (m := _OUT_LINE.match(line)) is not None:
            rows.append(_parse_row(m, len(rows), output_size))
        elif (d := _DONE_LINE.match(line)) is not None:
            done = int(d.group(1))
        elif line.startswith("tinyqml-error"):
            raise RunError(f"model returned an error: {line}")
    if done != n or len(rows) != n:
        raise RunError(f"harness output ended without 'tinyqml-done {n}' ({len(rows)} of {n} rows read)"
                       if done is None else f"expected {n} output rows, got {len(rows)} (done {done})")
    return np.array(rows, dtype=np.int8).reshape(n, output_size)


def _parse_row(match: re.Match[str], index: int, output_size: int) -> list[int]:
    if int(match.group(1)) != index:
        raise RunError(f"output row {match.group(1)} where row {index} was expected")
    vals = [int(v) for v in match.group(2).split()]
    if len(vals) != output_size:
        raise RunError(f"output row {index} has {len(vals)} values, expected {output_size}")
    if any(v < -128 or v > 127 for v in vals):
        raise RunError(f"output row {index} has values outside int8: {vals}")
    return vals


@dataclass(frozen=True)
class HarnessRun:
    """What :func:`run_harness` gives back: the outputs, the binary, and its sizes (Cortex-M4 only)."""

    outputs: np.ndarray
    binary: Path
    size: ElfSize | None


def run_harness(sources: Sequence[Path], include_dirs: Sequence[Path], inputs: np.ndarray,
                output_size: int, workdir: Path, target: Literal["host", "cortex-m4"] = "host",
                build: HostBuild | CortexM4Build | None = None, timeout: float = 60.0) -> HarnessRun:
    """Write the harness into ``workdir``, build it with the model ``sources`` for ``target``, run it, parse it."""
    if target not in ("host", "cortex-m4"):
        raise McuError(f"unknown target {target!r}; use 'host' or 'cortex-m4'")
    wanted = HostBuild if target == "host" else CortexM4Build
    build = wanted() if build is None else build
    if not isinstance(build, wanted):
        raise McuError(f"target {target!r} takes a {wanted.__name__}, got {type(build).__name__}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    main_c = workdir / "tinyqml_harness_main.c"
    main_c.write_text(harness_main(np.asarray(inputs), output_size))
    all_sources = [main_c, *sources]
    if isinstance(build, HostBuild):
        exe = compile_host(all_sources, include_dirs, workdir / "harness_host", build)
        return HarnessRun(parse_outputs(run_host(exe, timeout), len(inputs), output_size), exe, None)
    elf = compile_cortex_m4(all_sources, include_dirs, workdir / "harness_m4.elf", build)
    out = parse_outputs(run_qemu(elf, timeout), len(inputs), output_size)
    return HarnessRun(out, elf, elf_size(elf, build.size_tool))
