"""Compile effkernels' Triton kernels for sm_90 (H100) on any machine, GPU or not, and read what the
compiler made of them: registers and spills (ptxas -v), the SASS of the hot loop, instruction counts.

The tuners' --sm90 reports and the tests that guard the kernels' register budgets and pipelining are
built on it. Run `in_workers` for the compiling: its spawned processes import Triton without
TRITON_INTERPRET, which the test suite sets (an interpreted kernel cannot be compiled).
"""
import collections
import concurrent.futures
import multiprocessing
import os
import re
import subprocess
import tempfile

REGISTERS_PER_SM = 65536


def in_workers(fn, jobs, workers):
    """[fn(job) for job in jobs], in `workers` spawned processes that compile for real."""
    interpret = os.environ.pop("TRITON_INTERPRET", None)  # spawned children inherit the environment now
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            return list(pool.map(fn, jobs))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret


def tools_dir():
    """The folder of the ptxas and nvdisasm that Triton ships."""
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def has_ptxas():
    """Whether this Triton ships ptxas (the sm_90 reports need it)."""
    return os.path.exists(os.path.join(tools_dir(), "ptxas"))


def compile_ptx(kernel, types, constexprs, divisible=(), **options):
    """sm_90 PTX of a @triton.jit kernel. types: Triton types of the runtime arguments by name
    ("*bf16", "i32", ...); divisible: the arguments a launch would see as multiples of 16 (pointers
    are 16-byte aligned); options: the compiler's (num_warps, num_stages, enable_fp_fusion, ...)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {name: types[name] for name in kernel.arg_names if name not in constexprs}
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)  # positions of all arguments
             if name in signature and (signature[name].startswith("*") or name in divisible)}
    source = ASTSource(fn=kernel, signature={**signature, **{name: "constexpr" for name in constexprs}},
                       constexprs=constexprs, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options).asm["ptx"]


def launch_specialisation(values):
    """(runtime int arguments the JIT would make constexpr, those it would mark divisible by 16) for
    the int argument values of a real launch: Triton specialises ints equal to 1 into constants and
    tags multiples of 16 (0 included), and that changes vector widths and async copies."""
    constants = {name: 1 for name, value in values.items() if value == 1}
    divisible = {name for name, value in values.items() if value != 1 and value % 16 == 0}
    return constants, divisible


def compile_named(job):
    """compile_ptx for a job that crosses processes: (module, kernel name, types, constexprs, divisible,
    options), the kernel named rather than passed."""
    import importlib

    module, name, types, constexprs, divisible, options = job
    return compile_ptx(getattr(importlib.import_module(module), name), types, constexprs, divisible, **options)


def assemble(ptx):
    """(registers, spill bytes, SASS text or "" where Triton ships no nvdisasm) of PTX, by ptxas."""
    tools = tools_dir()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        report = subprocess.run([os.path.join(tools, "ptxas"), "-v", "--gpu-name", "sm_90a", path, "-o",
                                 path + ".cubin"], capture_output=True, text=True, check=True).stderr
        nvdisasm = os.path.join(tools, "nvdisasm")
        sass = subprocess.run([nvdisasm, "-c", path + ".cubin"], capture_output=True,
                              text=True).stdout if os.path.exists(nvdisasm) else ""
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", report))
    return registers, spills, sass


def programs_fit(registers, num_warps):
    """Programs of `num_warps` warps that fit in an SM's registers (allocated 8 per thread at a time)."""
    return REGISTERS_PER_SM // ((registers + 7) // 8 * 8 * 32 * num_warps)


def _loops(sass):
    """(the SASS instruction and label lines of nvdisasm output, the (first, last) line indices of its
    loops): a loop is a label and a later branch back to it."""
    label, address = r"\.L_x_(\d+):", r"/\*[0-9a-f]{4,}\*/"
    lines = [line for line in sass.splitlines() if re.match(label, line) or re.search(address, line)]
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(label, line))}
    return lines, [(labels[m.group(1)], i) for i, line in enumerate(lines)
                   if (m := re.search(r"BRA[^`]*`\(\.L_x_(\d+)\)", line)) and labels.get(m.group(1), i) < i]


def hot_loop_instructions(sass):
    """Instructions in the largest innermost loop (no other loop inside) of nvdisasm output."""
    lines, loops = _loops(sass)
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    return max((sum(not lines[k].startswith(".L_x_") for k in range(a, b + 1)) for a, b in innermost), default=0)


def loop_spill_instructions(sass):
    """Local-memory loads and stores (LDL, STL: register spills) inside any loop of nvdisasm output.
    A few registers spilled around the loops cost nothing measurable; a spill in a loop is paid every
    iteration, so the register-budget guards count these rather than ptxas's spill bytes."""
    lines, loops = _loops(sass)
    in_loops = {k for a, b in loops for k in range(a, b + 1)}
    return sum(bool(re.search(r"\b(LDL|STL)\b", lines[k])) for k in in_loops)


def memory_widths(ptx, op):
    """'count×bytes' of the global memory instructions `op` (ld/st) in PTX, widest first."""
    sizes = collections.Counter()
    for suffixes in re.findall(rf"\b{op}\.global((?:\.[\w:]+)+)", ptx):
        parts = suffixes.split(".")[1:]
        lanes = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
        bits = int(re.fullmatch(r"[bfsu](\d+)", parts[-1]).group(1))
        sizes[lanes * bits // 8] += 1
    return " ".join(f"{count}×{size}B" for size, count in sorted(sizes.items(), reverse=True))
