//! The SASS of the CUDA build, inspected without a GPU (DESIGN.md "Performance method"): the
//! sm_90a cubins of the kernel library are disassembled with the pinned `cuobjdump` (the
//! `nvidia-cuda-cuobjdump`/`nvidia-cuda-nvdisasm` 13.2.51 wheels, the first that exist, which
//! `scripts/install-cuda.sh` puts in `.cuda-sass/`), and each kernel's global memory
//! instructions are counted, in and out of its loops. The memory-bound families must issue
//! 128-bit loads and stores (`LDG.E.128`, `STG.E.128`) in the loops of their vector paths: the
//! bandwidth they reach on a GPU depends on it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One kernel's global memory instructions in its SASS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SassKernel {
    /// The mangled name.
    pub name: String,
    /// Backward branches (loops).
    pub loops: usize,
    /// 128-bit global loads, and how many of them lie inside a loop.
    pub ldg128: usize,
    /// 128-bit global loads inside a loop.
    pub ldg128_in_loop: usize,
    /// 128-bit global stores.
    pub stg128: usize,
    /// 128-bit global stores inside a loop.
    pub stg128_in_loop: usize,
    /// Narrower global loads (8 to 64 bits).
    pub ldg_narrow: usize,
    /// Narrower global stores.
    pub stg_narrow: usize,
    /// Instructions (NOPs aside) inside a loop: with the bytes the loop's global accesses move,
    /// the issue cost of its memory traffic (see [`SassKernel::instructions_per_512_bytes`]).
    pub instructions_in_loop: usize,
    /// Bytes one lane moves through the global loads and stores inside a loop, per iteration
    /// (16 per 128-bit access, 8 per 64-bit, 4 per plain, 2 or 1 per 16-/8-bit).
    pub bytes_per_lane_in_loop: usize,
    /// Tensor-core instructions (`HMMA`, `HGMMA`) in the kernel.
    pub mma: usize,
    /// The main loop: the loop (a backward branch's range) holding the most tensor-core
    /// instructions, the innermost among equals; its tensor-core instructions and all its
    /// instructions (NOPs aside). Zero when no loop holds one.
    pub main_loop_mma: usize,
    /// Instructions of the main loop (see `main_loop_mma`).
    pub main_loop_instructions: usize,
    /// The streaming loop: the loop holding the most global loads and stores, the innermost among
    /// equals; its instructions (NOPs aside). Zero when no loop accesses global memory. What a
    /// memory-bound kernel's issue cost per element is read from, without the reductions and
    /// tails that `instructions_in_loop` adds.
    pub streaming_loop_instructions: usize,
    /// Local-memory instructions (`LDL`, `STL`): spills or stack arrays, which a fast kernel has
    /// none of.
    pub local_memory: usize,
    /// Local-memory instructions inside a loop (a spill that a loop pays every iteration).
    pub local_memory_in_loop: usize,
    /// The tile loop: the loop holding the most shared-memory loads (`LDS`), the innermost among
    /// equals; its instructions (NOPs aside). Zero when no loop loads shared memory. What a
    /// kernel that stages tiles in shared memory (the NMU's product-GEMM) spends a step.
    pub shared_loop_instructions: usize,
}

impl SassKernel {
    /// The tensor-core share of the main loop: its MMA instructions over all of its instructions
    /// (None without a loop holding an MMA). What else the loop issues (address arithmetic,
    /// barriers, the softmax's scalar work) is what keeps the tensor cores idle.
    pub fn tensor_core_share(&self) -> Option<f64> {
        (self.main_loop_mma > 0).then(|| self.main_loop_mma as f64 / self.main_loop_instructions as f64)
    }

    /// Loop instructions per 512 bytes a warp moves in the loop, i.e. per 128-bit access of a
    /// vector loop (None without a global access in a loop). 512 bytes are what an H200 SM
    /// scheduler's share of DRAM bandwidth (4.2 TB/s / (132 × 4)) takes about 127 issue cycles
    /// to deliver (H100: ~160): a loop that issues more instructions than that per 512 bytes is
    /// bound by instruction issue, not memory (perf/nvidia-h200-2026-11-30.md: GELU bf16 at 256
    /// ran at 38% of copy).
    pub fn instructions_per_512_bytes(&self) -> Option<f64> {
        let warp_bytes = 32 * self.bytes_per_lane_in_loop;
        (warp_bytes > 0).then(|| self.instructions_in_loop as f64 * 512.0 / warp_bytes as f64)
    }
}

impl SassKernel {
    /// The kernel as one tab-separated line (the cache of [`kernels_cached`]).
    fn summary_line(&self) -> String {
        let counts = [
            self.loops,
            self.ldg128,
            self.ldg128_in_loop,
            self.stg128,
            self.stg128_in_loop,
            self.ldg_narrow,
            self.stg_narrow,
            self.instructions_in_loop,
            self.bytes_per_lane_in_loop,
            self.mma,
            self.main_loop_mma,
            self.main_loop_instructions,
            self.streaming_loop_instructions,
            self.local_memory,
            self.local_memory_in_loop,
            self.shared_loop_instructions,
        ];
        std::iter::once(self.name.clone()).chain(counts.iter().map(usize::to_string)).collect::<Vec<_>>().join("\t")
    }

    /// The inverse of `summary_line` (None for a line that is not one).
    fn from_summary_line(line: &str) -> Option<Self> {
        let mut fields = line.split('\t');
        let name = fields.next()?.to_string();
        let counts: Vec<usize> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        let [
            loops,
            ldg128,
            ldg128_in_loop,
            stg128,
            stg128_in_loop,
            ldg_narrow,
            stg_narrow,
            instructions_in_loop,
            bytes_per_lane_in_loop,
            mma,
            main_loop_mma,
            main_loop_instructions,
            streaming_loop_instructions,
            local_memory,
            local_memory_in_loop,
            shared_loop_instructions,
        ] = counts[..]
        else {
            return None;
        };
        Some(SassKernel {
            name,
            loops,
            ldg128,
            ldg128_in_loop,
            stg128,
            stg128_in_loop,
            ldg_narrow,
            stg_narrow,
            instructions_in_loop,
            bytes_per_lane_in_loop,
            mma,
            main_loop_mma,
            main_loop_instructions,
            streaming_loop_instructions,
            local_memory,
            local_memory_in_loop,
            shared_loop_instructions,
        })
    }
}

/// Bytes one lane moves with a global load or store opcode (`LDG.E.128`, `STG.E.U16`, …).
fn access_bytes(op: &str) -> usize {
    let parts: Vec<&str> = op.split('.').collect();
    if parts.contains(&"128") {
        16
    } else if parts.contains(&"64") {
        8
    } else if parts.iter().any(|p| matches!(*p, "U16" | "S16")) {
        2
    } else if parts.iter().any(|p| matches!(*p, "U8" | "S8")) {
        1
    } else {
        4
    }
}

/// The `cuobjdump` to use: `$CUOBJDUMP`, the project-local `.cuda-sass/` toolchain, then `PATH`.
pub fn find_cuobjdump() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CUOBJDUMP") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cuda-sass/nvidia/cu13/bin/cuobjdump");
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("cuobjdump")).find(|p| p.is_file())
}

/// The SASS of every kernel for `arch` (e.g. `sm_90a`) in `object` (a `.o` or `.a`), through
/// `cuobjdump` (whose directory must also hold `nvdisasm`).
pub fn disassemble(cuobjdump: &Path, object: &Path, arch: &str) -> Result<String, String> {
    let mut cmd = Command::new(cuobjdump);
    cmd.args(["-sass", "-arch", arch]).arg(object);
    // cuobjdump runs nvdisasm from PATH (or NVDISASM_PATH): the wheels put both in one folder.
    if let Some(dir) = cuobjdump.parent().filter(|d| d.join("nvdisasm").is_file()) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
            .map_err(|e| e.to_string())?;
        cmd.env("PATH", joined);
    }
    let out = cmd.output().map_err(|e| format!("{}: {e}", cuobjdump.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed: {}", cuobjdump.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernels of `object`'s `arch` SASS ([`disassemble`] then [`parse`]), through a summary
/// cached beside `object` and keyed by its size and modification time: the sm_90a dump of the
/// kernel library is ~200 MB and takes cuobjdump ~20 s, and several tests, each in a process of
/// its own (scripts/coverage.sh), read it. The first process to ask writes the summary; one that
/// asks meanwhile waits for it (a `.lock` file beside it) rather than disassembling again.
pub fn kernels_cached(cuobjdump: &Path, object: &Path, arch: &str) -> Result<Vec<SassKernel>, String> {
    let meta = std::fs::metadata(object).map_err(|e| format!("{}: {e}", object.display()))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let stem = object.file_name().unwrap_or_default().to_string_lossy();
    let key = format!("{stem}.{arch}.{}-{}", meta.len(), modified.map_or(0, |d| d.as_nanos()));
    let cache = object.with_file_name(format!("{key}.sass-kernels"));
    let lock = object.with_file_name(format!("{key}.sass-kernels.lock"));
    let read = |path: &Path| -> Option<Vec<SassKernel>> {
        std::fs::read_to_string(path).ok()?.lines().map(SassKernel::from_summary_line).collect()
    };
    let start = std::time::Instant::now();
    loop {
        if let Some(kernels) = read(&cache) {
            return Ok(kernels);
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(_) => break,
            // Another process is writing it: wait, but not forever (a holder that was killed
            // leaves its lock behind).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && start.elapsed().as_secs() < 300 => {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            // A read-only location or a stale lock: no cache.
            Err(_) => return Ok(parse(&disassemble(cuobjdump, object, arch)?)),
        }
    }
    // This process holds the lock; it goes when this function returns, panics included.
    struct Unlock<'a>(&'a Path);
    impl Drop for Unlock<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let _unlock = Unlock(&lock);
    let kernels = parse(&disassemble(cuobjdump, object, arch)?);
    let text: String = kernels.iter().map(|k| k.summary_line() + "\n").collect();
    let partial = cache.with_extension(format!("partial{}", std::process::id()));
    if std::fs::write(&partial, text).is_ok() {
        let _ = std::fs::rename(&partial, &cache);
    }
    Ok(kernels)
}

/// The address of a SASS line `/*0150*/ …` and its instruction text.
fn instruction(line: &str) -> Option<(u64, &str)> {
    let rest = line.trim_start().strip_prefix("/*")?;
    let (addr, text) = rest.split_once("*/")?;
    let addr = u64::from_str_radix(addr, 16).ok()?;
    Some((addr, text.split(";").next().unwrap_or_default().trim()))
}

/// Counts each kernel's global memory instructions in `cuobjdump -sass` output. A loop is a
/// branch to an earlier address (`BRA 0x…` with a target below the branch; a branch to itself
/// is the trap loop after EXIT, not a loop); an instruction is in a loop when its address lies
/// between such a target and its branch.
pub fn parse(sass: &str) -> Vec<SassKernel> {
    let mut kernels = Vec::new();
    let mut name: Option<&str> = None;
    let mut body: Vec<(u64, &str)> = Vec::new();
    for line in sass.lines() {
        if let Some(at) = line.find("Function : ") {
            if let Some(name) = name.take() {
                kernels.push(count(name.to_string(), &body));
            }
            body.clear();
            name = Some(line[at + "Function : ".len()..].trim());
        } else if let Some((addr, text)) = instruction(line) {
            body.push((addr, text));
        }
    }
    if let Some(name) = name {
        kernels.push(count(name.to_string(), &body));
    }
    kernels
}

/// The opcode of an instruction: the first word after an optional predicate (`@P0`, `@!P1`).
fn opcode(text: &str) -> &str {
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or_default();
    if first.starts_with('@') { words.next().unwrap_or_default() } else { first }
}

/// One kernel's counts, in time linear in its instructions and loops (the sm_90a dump of the
/// library is ~200 MB, read by four tests in debug builds): per-instruction facts once, prefix
/// sums for the per-loop counts, a difference array for "inside some loop". `body` is in
/// ascending address order, as cuobjdump prints it.
fn count(name: String, body: &[(u64, &str)]) -> SassKernel {
    let ops: Vec<&str> = body.iter().map(|(_, t)| opcode(t)).collect();
    let loops: Vec<(u64, u64)> = body
        .iter()
        .zip(&ops)
        .filter(|(_, op)| **op == "BRA")
        .filter_map(|((addr, t), _)| {
            let target = t.split_whitespace().last()?.trim_start_matches("0x");
            let target = u64::from_str_radix(target, 16).ok()?;
            (target < *addr).then_some((target, *addr))
        })
        .collect();
    let is_mma = |op: &str| op.starts_with("HMMA") || op.starts_with("HGMMA");
    let is_global = |op: &str| op.starts_with("LDG") || op.starts_with("STG");
    let is_shared_load = |op: &str| op.starts_with("LDS");
    // prefix[i] counts instructions before index i: (non-NOP, MMA, global access, shared load).
    let mut prefix = vec![(0usize, 0usize, 0usize, 0usize); ops.len() + 1];
    for (i, op) in ops.iter().enumerate() {
        let (n, m, g, l) = prefix[i];
        prefix[i + 1] = (
            n + usize::from(*op != "NOP"),
            m + usize::from(is_mma(op)),
            g + usize::from(is_global(op)),
            l + usize::from(is_shared_load(op)),
        );
    }
    // The instructions of an address range lo..=hi: the index range [a, b).
    let span = |lo: u64, hi: u64| (body.partition_point(|(a, _)| *a < lo), body.partition_point(|(a, _)| *a <= hi));
    let counts: Vec<(usize, usize, usize, usize)> = loops
        .iter()
        .map(|&(lo, hi)| {
            let (a, b) = span(lo, hi);
            let (x, y) = (prefix[a], prefix[b]);
            (y.0 - x.0, y.1 - x.1, y.2 - x.2, y.3 - x.3)
        })
        .collect();
    let mut depth = vec![0i64; ops.len() + 1];
    for &(lo, hi) in &loops {
        let (a, b) = span(lo, hi);
        depth[a] += 1;
        depth[b] -= 1;
    }
    let mut k = SassKernel { name, loops: loops.len(), ..SassKernel::default() };
    // The main loop: most MMAs, then the shortest range (the innermost of nested loops).
    if let Some(&(len, mma, _, _)) = counts.iter().filter(|c| c.1 > 0).max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        k.main_loop_mma = mma;
        k.main_loop_instructions = len;
    }
    // The streaming loop: most global accesses, then the shortest range.
    if let Some(&(len, _, _, _)) = counts.iter().filter(|c| c.2 > 0).max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0))) {
        k.streaming_loop_instructions = len;
    }
    // The tile loop: most shared loads, then the shortest range.
    if let Some(&(len, _, _, _)) = counts.iter().filter(|c| c.3 > 0).max_by(|a, b| a.3.cmp(&b.3).then(b.0.cmp(&a.0))) {
        k.shared_loop_instructions = len;
    }
    let mut open = 0i64;
    for (i, op) in ops.iter().enumerate() {
        open += depth[i];
        let in_loop = open > 0;
        k.mma += usize::from(is_mma(op));
        let local = op.starts_with("LDL") || op.starts_with("STL");
        k.local_memory += usize::from(local);
        k.local_memory_in_loop += usize::from(local && in_loop);
        if in_loop && *op != "NOP" {
            k.instructions_in_loop += 1;
            if is_global(op) {
                k.bytes_per_lane_in_loop += access_bytes(op);
            }
        }
        let wide = op.split('.').any(|p| p == "128");
        match (op.starts_with("LDG"), op.starts_with("STG"), wide) {
            (true, _, true) => {
                k.ldg128 += 1;
                k.ldg128_in_loop += usize::from(in_loop);
            }
            (_, true, true) => {
                k.stg128 += 1;
                k.stg128_in_loop += usize::from(in_loop);
            }
            (true, _, false) => k.ldg_narrow += 1,
            (_, true, false) => k.stg_narrow += 1,
            _ => {}
        }
    }
    k
}

/// Each kernel's `__launch_bounds__` block size (threads), from `cuobjdump -elf` output: the
/// `EIATTR_MAX_THREADS` attribute (x y z) of its `.nv.info.<name>` section. Kernels without
/// launch bounds have none.
pub fn max_threads(elf: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    let mut lines = elf.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix(".nv.info.") {
            current = Some(name.split_whitespace().next().unwrap_or_default());
        } else if line.ends_with("EIATTR_MAX_THREADS") {
            // The attribute's "Format:" line, then "Value:\t0x100 0x1 0x1".
            let value = lines.by_ref().take(2).find_map(|l| l.trim().strip_prefix("Value:"));
            let threads = value.map(|v| {
                v.split_whitespace().filter_map(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok()).product()
            });
            if let (Some(name), Some(threads)) = (current, threads) {
                out.push((name.to_string(), threads));
            }
        }
    }
    out
}

/// The ELF sections of every cubin for `arch` in `object`, through `cuobjdump -elf`.
pub fn elf(cuobjdump: &Path, object: &Path, arch: &str) -> Result<String, String> {
    let out = Command::new(cuobjdump)
        .args(["-elf", "-arch", arch])
        .arg(object)
        .output()
        .map_err(|e| format!("{}: {e}", cuobjdump.display()))?;
    if !out.status.success() {
        return Err(format!("{} -elf failed: {}", cuobjdump.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a kernel is a vector path: its name (mangled) is a `…_kernel<T, …, kW, …>` template
/// whose first integer argument kW is the 16-byte pack of its element type T (4 for 4-byte
/// types, 8 for 2-byte ones).
pub fn is_vector_path(mangled: &str) -> bool {
    let Some(args) = mangled.split("_kernelI").nth(1) else { return false };
    let element_bytes = if args.starts_with('f') || args.starts_with('j') {
        4
    } else if args.starts_with("6__half") || args.starts_with("13__nv_bfloat16") || args.starts_with('t') {
        2
    } else {
        return false;
    };
    let Some(first_int) = args.split("Li").nth(1).and_then(|s| s.split('E').next()) else { return false };
    first_int.parse::<usize>().is_ok_and(|w| w * element_bytes == 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
        Function : _ZN4kiln10activation18flat_fwd_kernelIfNS0_4ReluELi4EEEvPKT_\n\
        /*0000*/                   MOV R1, c[0x0][0x28] ;\n\
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;\n\
        /*0020*/                   LDG.E.128 R8, desc[UR4][R6.64] ;\n\
        /*0030*/                   STG.E.128 desc[UR4][R2.64], R4 ;\n\
        /*0040*/              @!P0 BRA 0x20 ;\n\
        /*0050*/                   STG.E desc[UR4][R2.64], R4 ;\n\
        /*0060*/                   EXIT ;\n\
        /*0070*/                   BRA 0x70;\n\
        Function : _ZN4kiln4norm15finalize_kernelEPKfllPf\n\
        /*0000*/                   LDG.E R4, desc[UR4][R2.64] ;\n";

    #[test]
    fn parses_loops_and_widths() {
        let k = parse(SAMPLE);
        assert_eq!(k.len(), 2);
        let want = SassKernel {
            name: "_ZN4kiln10activation18flat_fwd_kernelIfNS0_4ReluELi4EEEvPKT_".into(),
            loops: 1,
            ldg128: 2,
            ldg128_in_loop: 1,
            stg128: 1,
            stg128_in_loop: 1,
            ldg_narrow: 0,
            stg_narrow: 1,
            instructions_in_loop: 3, // LDG, STG and the branch at 0x20..0x40
            bytes_per_lane_in_loop: 32,
            streaming_loop_instructions: 3,
            ..SassKernel::default()
        };
        assert_eq!(k[0], want);
        assert_eq!(k[0].instructions_per_512_bytes(), Some(1.5));
        assert_eq!((k[1].loops, k[1].ldg_narrow, k[1].instructions_per_512_bytes()), (0, 1, None));
        assert_eq!(["LDG.E.128", "STG.E.64", "LDG.E", "LDG.E.U16", "STG.E.U8"].map(access_bytes), [16, 8, 4, 2, 1]);
    }

    #[test]
    fn finds_the_main_loop_and_its_tensor_core_share() {
        // An outer loop 0x10..0x90 around an inner one 0x20..0x60 with 2 of its 4 HMMAs (plus
        // one outside the inner loop); a spill.
        let sass = "\
            Function : _ZN4kiln9attention20attention_fwd_kernelEv\n\
            /*0000*/                   MOV R1, c[0x0][0x28] ;\n\
            /*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n\
            /*0020*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n\
            /*0030*/                   FADD R4, R4, R5 ;\n\
            /*0040*/                   NOP ;\n\
            /*0050*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n\
            /*0060*/              @!P0 BRA 0x20 ;\n\
            /*0070*/                   STL [R1], R4 ;\n\
            /*0080*/                   LDL R4, [R1] ;\n\
            /*0090*/              @!P1 BRA 0x10 ;\n\
            /*00a0*/                   EXIT ;\n";
        let k = &parse(sass)[0];
        assert_eq!((k.mma, k.main_loop_mma, k.local_memory), (3, 3, 2));
        // The outer loop holds the most MMAs (3): 8 instructions without the NOP.
        assert_eq!(k.main_loop_instructions, 8);
        assert_eq!(k.tensor_core_share(), Some(3.0 / 8.0));
        // No global access in any loop: no streaming loop. With an LDG in the outer loop only
        // (in the spill store's place), that loop is it: 8 instructions.
        assert_eq!(k.streaming_loop_instructions, 0);
        let loads =
            sass.replace("/*0070*/                   STL [R1], R4 ;\n", "/*0070*/ LDG.E R6, desc[UR4][R2.64] ;\n");
        assert_eq!(parse(&loads)[0].streaming_loop_instructions, 8);
        // Equal counts: the innermost loop wins.
        let flat =
            sass.replace("/*0010*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4", "/*0010*/ MOV R2, R3");
        let k = &parse(&flat)[0];
        assert_eq!((k.main_loop_mma, k.main_loop_instructions), (2, 4));
        assert_eq!(parse(SAMPLE)[0].tensor_core_share(), None);
    }

    #[test]
    fn summary_lines_round_trip() {
        for k in parse(SAMPLE) {
            assert_eq!(SassKernel::from_summary_line(&k.summary_line()), Some(k));
        }
        assert_eq!(SassKernel::from_summary_line("name\t1\t2"), None);
        assert_eq!(SassKernel::from_summary_line(""), None);
    }

    #[test]
    fn reads_launch_bounds() {
        let elf = ".nv.info._ZN4kiln4norm15finalize_kernelEPKfllPf\n\
                   \tAttribute:\tEIATTR_KPARAM_INFO\n\tFormat:\tEIFMT_SVAL\n\tValue:\tIndex : 0x0\n\
                   \tAttribute:\tEIATTR_MAX_THREADS\n\tFormat:\tEIFMT_SVAL\n\tValue:\t0x100 0x1 0x1 \n\
                   .nv.info._ZN4kiln7padding18count_tiles_kernelIhEEvPKT_\n\
                   \tAttribute:\tEIATTR_MAX_THREADS\n\tFormat:\tEIFMT_SVAL\n\tValue:\t0x20 0x4 0x1\n";
        let m = max_threads(elf);
        assert_eq!(
            m,
            vec![
                ("_ZN4kiln4norm15finalize_kernelEPKfllPf".to_string(), 256),
                ("_ZN4kiln7padding18count_tiles_kernelIhEEvPKT_".to_string(), 128)
            ]
        );
    }

    #[test]
    fn tells_vector_paths_from_their_names() {
        assert!(is_vector_path("_ZN4kiln10activation18flat_fwd_kernelIfNS0_4ReluELi4EEEvPKT_"));
        assert!(is_vector_path("_ZN4kiln4norm17fwd_cached_kernelI13__nv_bfloat16Li8ELi2ELb0EEEvNS0_9FwdParamsIT_EE"));
        assert!(!is_vector_path("_ZN4kiln4norm17fwd_cached_kernelI13__nv_bfloat16Li1ELi16ELb0EEEvNS0_9FwdParamsIT_EE"));
        assert!(is_vector_path("_ZN4kiln7padding16copy_rows_kernelItLi8EEEvPKT_"));
        assert!(!is_vector_path("_ZN4kiln7padding18count_tiles_kernelIhEEvPKT_"));
        assert!(!is_vector_path("_ZN4kiln4norm15finalize_kernelEPKfllPf"));
    }
}
