//! Records how this build was made, for `kqrs._kqrs.build_info()` and `kqrs doctor`: the target triple, the
//! oldest glibc the binary was linked for, the compiler, and (with the `python` feature) the CPython ABI.
//! Nothing here changes what is compiled. One thing changes how it is linked: `static_unwinder`.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Set by scripts/build-wheels.sh to the glibc the wheel is linked against (zig's sysroot, manylinux2014).
    println!("cargo:rerun-if-env-changed=KQRS_TARGET_GLIBC");

    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=KQRS_BUILD_TARGET={target}");
    println!("cargo:rustc-env=KQRS_BUILD_PROFILE={}", env::var("PROFILE").unwrap_or_default());
    println!("cargo:rustc-env=KQRS_BUILD_RUSTC={}", rustc_version());
    println!("cargo:rustc-env=KQRS_BUILD_GLIBC={}", target_glibc(&target, &host));
    static_unwinder(&target, &host);

    #[cfg(feature = "python")]
    {
        let cfg = pyo3_build_config::get();
        let ft = cfg.is_free_threaded();
        let abi = if cfg.abi3 {
            format!("abi3 (CPython {}.{}+)", cfg.version.major, cfg.version.minor)
        } else {
            format!("cp{}{}{}", cfg.version.major, cfg.version.minor, if ft { "t" } else { "" })
        };
        println!("cargo:rustc-env=KQRS_BUILD_PYTHON_ABI={abi}");
        println!("cargo:rustc-env=KQRS_BUILD_FREE_THREADED={}", if ft { "1" } else { "0" });
    }
}

fn rustc_version() -> String {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// "2.17" when the wheel build says so; else, for a native build, the build machine's glibc (the binary
/// may use any symbol it has); else "unknown".
fn target_glibc(target: &str, host: &str) -> String {
    if let Ok(v) = env::var("KQRS_TARGET_GLIBC") {
        if !v.is_empty() {
            return v;
        }
    }
    if !target.ends_with("-gnu") || target != host {
        return "unknown".into();
    }
    // "glibc 2.36"
    Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().strip_prefix("glibc ").map(str::to_string))
        .map(|v| format!("{v} (this build machine's)"))
        .unwrap_or_else(|| "unknown".into())
}

/// Links GCC's unwinder (libgcc_eh.a) into the binary instead of loading libgcc_s.so.1 beside it, for a
/// native linux-gnu build linked by the system's cc.
///
/// Rust's std asks for `-lgcc_s` (panics unwind). A loaded libgcc_s is five more mappings in every process
/// that loads kqrs, which fork() copies and exit() tears down again (measured: about 0.3% of a fork +
/// exit + waitpid of a process with 10 kqueues). The wheels scripts/build-wheels.sh makes are linked by
/// zig, which already links its own unwinder statically: this makes a native build (maturin develop, the
/// benchmarks' wheel, the C library) the same. The trick: a `libgcc_s.a` that is libgcc_eh.a, in a
/// directory searched before the system's, so std's `-lgcc_s` finds it. Its symbols stay inside the binary
/// (Rust exports only the entry points). Tells the crate with cfg `kqrs_static_unwinder`.
///
/// Left alone, so linking works as before, when: cross-compiling; a linker is set for the target (in the
/// environment or in RUSTFLAGS: zig, a cross cc); the build is for an older glibc than this machine's
/// (KQRS_TARGET_GLIBC, the wheels' 2.17: gcc 12's libgcc_eh.a needs glibc 2.35's `_dl_find_object`, which
/// libgcc_s hid); the compiler has no libgcc_eh.a; or KQRS_DYNAMIC_UNWINDER=1.
fn static_unwinder(target: &str, host: &str) {
    println!("cargo:rerun-if-env-changed=KQRS_DYNAMIC_UNWINDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo::rustc-check-cfg=cfg(kqrs_static_unwinder)");
    let linker_var = format!("CARGO_TARGET_{}_LINKER", target.to_uppercase().replace('-', "_"));
    println!("cargo:rerun-if-env-changed={linker_var}");
    // `-C linker=X` arrives as the two arguments "-C", "linker=X"; `-Clinker=X` as one.
    let rustflags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let linker_in_flags = rustflags.split('\x1f').any(|f| f.starts_with("linker=") || f.starts_with("-Clinker="));
    if env::var("KQRS_DYNAMIC_UNWINDER").is_ok_and(|v| v == "1")
        || !target.ends_with("-linux-gnu")
        || target != host
        || env::var_os("RUSTC_LINKER").is_some()
        || env::var_os(&linker_var).is_some()
        || linker_in_flags
        || env::var("KQRS_TARGET_GLIBC").is_ok_and(|v| !v.is_empty())
    {
        return;
    }
    let Some(eh) = Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| std::path::PathBuf::from(s.trim()))
        .filter(|p| p.is_absolute() && p.is_file())
    else {
        return;
    };
    let Some(out) = env::var_os("OUT_DIR").map(std::path::PathBuf::from) else { return };
    let dir = out.join("static-unwinder");
    let lib = dir.join("libgcc_s.a");
    let _ = std::fs::remove_file(&lib);
    if std::fs::create_dir_all(&dir).is_err() || std::os::unix::fs::symlink(&eh, &lib).is_err() {
        return;
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-cfg=kqrs_static_unwinder");
}
