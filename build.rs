//! Records how this build was made, for `kqrs._kqrs.build_info()` and `kqrs doctor`: the target triple, the
//! oldest glibc the binary was linked for, the compiler, and (with the `python` feature) the CPython ABI.
//! Nothing here changes what is compiled.

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
