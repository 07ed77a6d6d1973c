//! The C face's header (capi/include/sys/event.h) against the engine: every value it defines is the
//! engine's (rust/src/consts.rs), and `struct kevent` as gcc lays it out is `kqrs::Kevent`, field by field.
//! Needs gcc (as building C programs against the library does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn parse_int(s: &str) -> Option<i64> {
    let s = s.trim().trim_start_matches('(').trim_end_matches(')').replace('_', "");
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, s),
    };
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => s.parse::<i64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// `#define NAME value` lines whose value is a number.
fn header_values() -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(root().join("capi/include/sys/event.h")).unwrap();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let (Some(name), Some(value)) = (words.next(), words.next()) else { continue };
        if let Some(v) = parse_int(value) {
            assert!(m.insert(name.to_string(), v).is_none(), "{name} defined twice");
        }
    }
    m
}

/// `pub const NAME: T = value;` lines of the engine's constants.
fn engine_values() -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string(root().join("rust/src/consts.rs")).unwrap();
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else { continue };
        let Some((name, rest)) = rest.split_once(':') else { continue };
        let Some((_, value)) = rest.split_once('=') else { continue };
        if let Some(v) = parse_int(value.trim().trim_end_matches(';')) {
            m.insert(name.trim().to_string(), v);
        }
    }
    m
}

/// The engine's names the header leaves out on purpose: filters kqrs does not implement (a C program's
/// `#ifdef EVFILT_AIO` must be false, as with libkqueue), and NOTE_EXITSTATUS: macOS's, absent from
/// libkqueue's header, where code takes `#ifdef NOTE_EXITSTATUS` to mean macOS's data format.
const ENGINE_ONLY: &[&str] = &["EVFILT_AIO", "EVFILT_NETDEV", "EVFILT_FS", "EVFILT_LIO", "NOTE_EXITSTATUS"];

#[test]
fn every_value_in_the_header_is_the_engines() {
    let (h, e) = (header_values(), engine_values());
    assert!(h.len() > 60 && e.len() > 60, "parsed {} header and {} engine values", h.len(), e.len());
    let mut wrong = Vec::new();
    for (name, v) in &h {
        // (VQ_* are vfsquery flags libkqueue's header carries for EVFILT_FS: not the engine's business.)
        let kqueue_name = ["EVFILT_", "EV_", "NOTE_"].iter().any(|p| name.starts_with(p));
        match e.get(name) {
            Some(ev) if ev != v => wrong.push(format!("{name}: header {v:#x}, engine {ev:#x}")),
            None if kqueue_name => wrong.push(format!("{name}: in the header, not in the engine")),
            _ => {}
        }
    }
    for name in e.keys() {
        if !h.contains_key(name) && !ENGINE_ONLY.contains(&name.as_str()) && !name.starts_with("EV_") {
            wrong.push(format!("{name}: in the engine, not in the header"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn struct_kevent_has_the_engines_layout() {
    let dir = std::env::temp_dir().join(format!("kqrs-capi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <stddef.h>
#include <sys/event.h>
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu %zu %zu\n", sizeof(struct kevent), _Alignof(struct kevent),
           offsetof(struct kevent, ident), offsetof(struct kevent, filter), offsetof(struct kevent, flags),
           offsetof(struct kevent, fflags), offsetof(struct kevent, data), offsetof(struct kevent, udata));
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("layout");
    let include = root().join("capi/include");
    let cc = Command::new("gcc")
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("gcc must be installed to check the C header");
    assert!(cc.status.success(), "gcc: {}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&exe).output().unwrap();
    let got = String::from_utf8(out.stdout).unwrap();
    use kqrs::Kevent;
    use std::mem::{align_of, offset_of, size_of};
    let want = format!(
        "{} {} {} {} {} {} {} {}\n",
        size_of::<Kevent>(),
        align_of::<Kevent>(),
        offset_of!(Kevent, ident),
        offset_of!(Kevent, filter),
        offset_of!(Kevent, flags),
        offset_of!(Kevent, fflags),
        offset_of!(Kevent, data),
        offset_of!(Kevent, udata)
    );
    assert_eq!(got, want, "C: size align ident filter flags fflags data udata");
    assert_eq!(size_of::<Kevent>(), 32);
    let _ = std::fs::remove_dir_all(&dir);
}
