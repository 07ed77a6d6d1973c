"""EVFILT_VNODE: every line of semantics.md's vnode section, issue 5's list, and issue 18's table.

Reference: FreeBSD vfs_subr.c (filt_vfsvnode and the vop_*_post hooks): the knote's fflags accumulate the
notes it asked for until reported; EV_CLEAR resets them, without it they are reported on every call.
What each operation posts, and in which order across the knotes of one kqueue (a knote is queued when its
first note fires), is FreeBSD's as its source has it (the "FreeBSD's notes per operation" section below
has the table, with the hook behind each row). kqrs (docs/design.md, vnode.rs) watches the file through
the kqueue's one inotify instance, subscribed to changes only unless a knote asks for the opt-in NOTE_OPEN,
NOTE_CLOSE, NOTE_CLOSE_WRITE or NOTE_READ, and tells what changed from an fstat snapshot. ``ident`` is an
open fd; the knote follows the open file, not its path.

Every test owns its files (tmp_path) and kqueues. The tests that change system-wide inotify limits or
mount a filesystem are thread_unsafe (pytest-run-parallel) and put everything back.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import kqrs
from kqrs import kevent

from kqhelpers import (
    ADD,
    CLEAR,
    DELETE,
    DISABLE,
    DISPATCH,
    ENABLE,
    EOF,
    NOTE_ATTRIB,
    NOTE_CLOSE,
    NOTE_CLOSE_WRITE,
    NOTE_DELETE,
    NOTE_EXTEND,
    NOTE_LINK,
    NOTE_OPEN,
    NOTE_READ,
    NOTE_RENAME,
    NOTE_REVOKE,
    NOTE_TRUNCATE,
    NOTE_WRITE,
    ONESHOT,
    VNODE,
    errno_of,
)

# Every change; the notes about using the file are opt-in and not part of it.
ALL = NOTE_DELETE | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_LINK | NOTE_RENAME | NOTE_REVOKE | NOTE_TRUNCATE
USE = NOTE_OPEN | NOTE_CLOSE | NOTE_CLOSE_WRITE | NOTE_READ
# The change notes FreeBSD's <sys/event.h> has (no NOTE_TRUNCATE): what a program written for it asks for.
FREEBSD = ALL & ~NOTE_TRUNCATE
NAMES = {
    NOTE_DELETE: "DELETE",
    NOTE_WRITE: "WRITE",
    NOTE_EXTEND: "EXTEND",
    NOTE_ATTRIB: "ATTRIB",
    NOTE_LINK: "LINK",
    NOTE_RENAME: "RENAME",
    NOTE_REVOKE: "REVOKE",
    NOTE_TRUNCATE: "TRUNCATE",
    NOTE_OPEN: "OPEN",
    NOTE_CLOSE: "CLOSE",
    NOTE_CLOSE_WRITE: "CLOSE_WRITE",
    NOTE_READ: "READ",
}

QUIET = 0.05  # how long "nothing happens" is watched for


def names(fflags):
    return "|".join(n for bit, n in NAMES.items() if fflags & bit) or "0"


@pytest.fixture
def fds():
    """open(path, flags=O_RDONLY) -> fd, closed at the end (unless the test closed it)."""
    made = []

    def _open(path, flags=os.O_RDONLY):
        fd = os.open(path, flags)
        made.append(fd)
        return fd

    yield _open
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def f(tmp_path, fds):
    """A 3-byte file and an O_RDONLY fd on it."""
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    return p, fds(p)


@pytest.fixture
def d(tmp_path, fds):
    """An empty directory and an O_RDONLY fd on it."""
    p = tmp_path / "d"
    p.mkdir()
    return p, fds(p, os.O_RDONLY | os.O_DIRECTORY)


def vnode(fd, fflags=ALL, flags=ADD | CLEAR, udata=0):
    return kevent(fd, VNODE, flags, fflags, 0, udata)


def watch(kq, fd, fflags=ALL, flags=ADD | CLEAR, udata=0):
    assert kq.control([vnode(fd, fflags, flags, udata)], 0) == []


def events(kq, timeout=0.5, n=16):
    return [(e.ident, e.filter, e.flags, names(e.fflags), e.data, e.udata) for e in kq.control(None, n, timeout)]


def ev(fd, notes, flags=CLEAR, udata=0):
    return (fd, VNODE, flags, names(notes), 0, udata)


def quiet(kq, timeout=QUIET):
    """Nothing is reported, and control() returned only at its timeout."""
    t0 = time.monotonic()
    assert kq.control(None, 16, timeout) == []
    assert time.monotonic() - t0 >= timeout * 0.9


def append(path, data=b"x"):
    with open(path, "ab") as fh:
        fh.write(data)


def overwrite(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ---- what ident may be -----------------------------------------------------------------------------


def test_pipe_is_einval(kq):
    r, w = os.pipe()
    try:
        assert errno_of(kq, vnode(r)) == errno.EINVAL
        assert errno_of(kq, vnode(w)) == errno.EINVAL
    finally:
        os.close(r)
        os.close(w)
    assert kq._stats()[0] == 0


def test_socket_is_einval(kq):
    a, b = socket.socketpair()
    with a, b:
        assert errno_of(kq, vnode(a.fileno())) == errno.EINVAL
    assert kq._stats()[0] == 0


def test_named_pipe_opened_is_einval(kq, tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert errno_of(kq, vnode(fd)) == errno.EINVAL
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["eventfd", "kqueue"])
def test_anonymous_inode_fds_are_einval(kq, kind):
    """An eventfd or a kqueue is no file of any filesystem: FreeBSD's vnode filter refuses non-vnodes."""
    other = kqrs.kqueue() if kind == "kqueue" else None
    fd = other.fileno() if other else os.eventfd(0)
    try:
        assert errno_of(kq, vnode(fd)) == errno.EINVAL
    finally:
        if other:
            other.close()
        else:
            os.close(fd)


@pytest.mark.parametrize("fflags", [0x1000, 0x2000, 0x10000, 0x80000000, ALL | USE | 0x1000])
def test_unknown_fflags_are_einval(kq, f, fflags):
    _, fd = f
    assert errno_of(kq, vnode(fd, fflags)) == errno.EINVAL
    assert kq._stats()[0] == 0


def test_unknown_fflags_on_modify_are_einval_and_the_knote_keeps_its_notes(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_WRITE)
    assert errno_of(kq, vnode(fd, 0x1000)) == errno.EINVAL
    overwrite(p, b"q")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_closed_fd_is_ebadf(kq, tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)
    assert errno_of(kq, vnode(fd)) == errno.EBADF
    assert errno_of(kq, vnode(100000)) == errno.EBADF
    with pytest.raises(OSError) as e:
        kq.control([vnode(fd)], 0)
    assert e.value.errno == errno.EBADF


def test_delete_without_a_knote_is_enoent(kq, f):
    _, fd = f
    assert errno_of(kq, vnode(fd, 0, DELETE)) == errno.ENOENT


def test_o_path_and_write_only_fds_are_vnodes(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"")
    wfd = fds(p, os.O_WRONLY)
    pfd = fds(p, os.O_PATH)
    watch(kq, wfd, NOTE_WRITE | NOTE_EXTEND, udata=1)
    watch(kq, pfd, NOTE_WRITE | NOTE_EXTEND, udata=2)
    os.write(wfd, b"xy")
    assert sorted(events(kq)) == sorted(
        [ev(wfd, NOTE_WRITE | NOTE_EXTEND, udata=1), ev(pfd, NOTE_WRITE | NOTE_EXTEND, udata=2)]
    )


# ---- NOTE_WRITE, NOTE_EXTEND, NOTE_TRUNCATE ---------------------------------------------------------


def test_nothing_before_a_change(kq, f):
    _, fd = f
    watch(kq, fd)
    quiet(kq)


def test_append_is_write_and_extend(kq, f):
    p, fd = f
    watch(kq, fd, udata=9)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND, udata=9)]
    quiet(kq)


def test_same_size_overwrite_is_write(kq, f):
    p, fd = f
    watch(kq, fd)
    overwrite(p, b"xyz")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_empty_write_is_nothing(kq, f):
    p, fd = f
    watch(kq, fd)
    overwrite(p, b"")
    quiet(kq)


def test_write_through_the_watched_fd_itself(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"abc")
    fd = fds(p, os.O_RDWR)
    watch(kq, fd)
    os.pwrite(fd, b"Z", 0)
    assert events(kq) == [ev(fd, NOTE_WRITE)]
    os.pwrite(fd, b"Z", 10)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


def test_truncate_shorter_is_attrib_and_truncate(kq, f):
    """A truncation is a setattr: FreeBSD's NOTE_ATTRIB, and libkqueue's NOTE_TRUNCATE in addition."""
    p, fd = f
    watch(kq, fd)
    os.truncate(p, 1)
    assert events(kq) == [ev(fd, NOTE_ATTRIB | NOTE_TRUNCATE)]


def test_open_with_o_trunc_is_attrib_and_truncate(kq, f):
    p, fd = f
    watch(kq, fd)
    os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
    assert events(kq) == [ev(fd, NOTE_ATTRIB | NOTE_TRUNCATE)]


def test_truncate_asked_for_truncate_only(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_TRUNCATE)
    os.truncate(p, 0)
    assert events(kq) == [ev(fd, NOTE_TRUNCATE)]


def test_only_the_notes_asked_for_are_reported(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_EXTEND)
    overwrite(p, b"q")  # a write that does not grow: not asked for, no event
    os.chmod(p, 0o600)
    quiet(kq)
    append(p)
    # FreeBSD's filt_vnode reports the whole hint of an operation the knote asked any note of: a write past
    # the end is NOTE_WRITE|NOTE_EXTEND.
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]
    watch(kq, fd, NOTE_DELETE)  # EV_ADD again changes the notes
    append(p)
    os.chmod(p, 0o600)
    quiet(kq)


# ---- NOTE_ATTRIB -----------------------------------------------------------------------------------


def test_chmod_is_attrib(kq, f):
    p, fd = f
    watch(kq, fd)
    os.chmod(p, 0o640)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_fchmod_on_the_watched_fd_is_attrib(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"")
    fd = fds(p, os.O_RDWR)
    watch(kq, fd)
    os.fchmod(fd, 0o600)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_chown_to_another_owner_is_attrib(kq, f, effective_caps):
    if not effective_caps >> 0 & 1:  # CAP_CHOWN
        pytest.skip("chown to another uid needs CAP_CHOWN")
    p, fd = f
    watch(kq, fd)
    os.chown(p, 12345, 23456)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_chown_to_the_same_owner_is_attrib(kq, f):
    """chown(2) to the owner it already has still changes ctime, and Linux reports it (IN_ATTRIB)."""
    p, fd = f
    st = os.stat(p)
    watch(kq, fd)
    os.chown(p, st.st_uid, st.st_gid)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_utime_is_attrib(kq, f):
    p, fd = f
    watch(kq, fd)
    os.utime(p, (1, 2))
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]
    os.utime(p, None)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_xattr_is_attrib(kq, f):
    p, fd = f
    watch(kq, fd)
    try:
        os.setxattr(p, "user.kqrs", b"1")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            pytest.skip(f"no user xattrs here: {e}")
        raise
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


# ---- NOTE_LINK, NOTE_RENAME, NOTE_DELETE ------------------------------------------------------------


def test_link_is_link_and_unlink_of_another_name_is_delete(kq, f, tmp_path):
    """FreeBSD: vop_link_post posts NOTE_LINK; vop_remove_post posts NOTE_DELETE for every name removed,
    whatever links remain (never NOTE_LINK)."""
    p, fd = f
    watch(kq, fd)
    os.link(p, tmp_path / "hard")
    assert events(kq) == [ev(fd, NOTE_LINK)]
    os.unlink(tmp_path / "hard")
    assert events(kq) == [ev(fd, NOTE_DELETE)]


def test_rename_is_rename(kq, f, tmp_path):
    p, fd = f
    watch(kq, fd)
    os.rename(p, tmp_path / "g")
    assert events(kq) == [ev(fd, NOTE_RENAME)]


def test_rename_to_another_directory_is_rename(kq, f, tmp_path):
    p, fd = f
    (tmp_path / "sub").mkdir()
    watch(kq, fd)
    os.rename(p, tmp_path / "sub" / "g")
    assert events(kq) == [ev(fd, NOTE_RENAME)]


def test_unlink_while_open_is_delete(kq, f):
    p, fd = f
    watch(kq, fd, udata=3)
    os.unlink(p)
    assert events(kq) == [ev(fd, NOTE_DELETE, udata=3)]
    quiet(kq)


def test_unlink_asked_for_delete_only(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_DELETE)
    os.unlink(p)
    assert events(kq) == [ev(fd, NOTE_DELETE)]


def test_rmdir_of_a_watched_directory_is_delete(kq, d):
    """Linux tells the rmdir of an open directory only to its parent: kqrs watches the parent itself (see
    "rmdir and the internal parent watch" below), so nobody has to watch it."""
    p, fd = d
    watch(kq, fd)
    os.rmdir(p)
    assert events(kq) == [ev(fd, NOTE_DELETE)]
    quiet(kq)


def test_renamed_over_is_delete(kq, f, tmp_path):
    p, fd = f
    other = tmp_path / "other"
    other.write_bytes(b"new")
    watch(kq, fd)
    os.rename(other, p)
    assert events(kq) == [ev(fd, NOTE_DELETE)]


def test_rename_a_over_b_reports_rename_on_a_then_delete_on_b(kq, tmp_path, fds):
    """FreeBSD's vop_rename_post: NOTE_RENAME on the file renamed, then NOTE_DELETE on the one it
    replaced (Linux reports the replaced file's link count first)."""
    a, b = tmp_path / "A", tmp_path / "B"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    fa, fb = fds(a), fds(b)
    watch(kq, fa, udata=1)
    watch(kq, fb, udata=2)
    os.rename(a, b)
    assert events(kq) == [ev(fa, NOTE_RENAME, udata=1), ev(fb, NOTE_DELETE, udata=2)]


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_rename_over_order_does_not_depend_on_the_order_of_the_knotes(kq, tmp_path, fds, order):
    a, b = tmp_path / "A", tmp_path / "B"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    fa, fb = fds(a), fds(b)
    for fd in [fa, fb] if order == "a_first" else [fb, fa]:
        watch(kq, fd, NOTE_DELETE | NOTE_RENAME)
    os.rename(a, b)
    assert events(kq) == [ev(fa, NOTE_RENAME), ev(fb, NOTE_DELETE)]


# ---- directories -----------------------------------------------------------------------------------


def test_directory_entry_added_is_write(kq, d):
    p, fd = d
    watch(kq, fd)
    (p / "x").write_bytes(b"")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_directory_entry_removed_is_write(kq, d):
    p, fd = d
    (p / "x").write_bytes(b"")
    watch(kq, fd)
    os.unlink(p / "x")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_directory_entry_renamed_is_write(kq, d):
    p, fd = d
    (p / "x").write_bytes(b"")
    watch(kq, fd)
    os.rename(p / "x", p / "y")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_entry_moved_between_directories_is_write_and_extend_on_both(kq, tmp_path, fds):
    """FreeBSD's vop_rename_post: NOTE_WRITE|NOTE_EXTEND on the directory left, then on the one entered."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"")
    fa, fb = fds(tmp_path / "a"), fds(tmp_path / "b")
    watch(kq, fb)
    watch(kq, fa)
    os.rename(tmp_path / "a" / "x", tmp_path / "b" / "x")
    assert events(kq) == [ev(fa, NOTE_WRITE | NOTE_EXTEND), ev(fb, NOTE_WRITE | NOTE_EXTEND)]


def test_symlink_and_hard_link_entries_are_write(kq, d, tmp_path):
    p, fd = d
    (tmp_path / "t").write_bytes(b"")
    watch(kq, fd)
    os.symlink("nowhere", p / "s")
    assert events(kq) == [ev(fd, NOTE_WRITE)]
    os.link(tmp_path / "t", p / "h")
    assert events(kq) == [ev(fd, NOTE_WRITE)]


def test_subdirectory_created_or_removed_is_write_and_link(kq, d):
    p, fd = d
    watch(kq, fd)
    os.mkdir(p / "sub")
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_LINK)]
    os.rmdir(p / "sub")
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_LINK)]


def test_changes_inside_entries_are_no_event_for_the_directory(kq, d):
    p, fd = d
    (p / "x").write_bytes(b"abc")
    watch(kq, fd)
    append(p / "x")
    os.chmod(p / "x", 0o600)
    os.utime(p / "x", None)
    os.truncate(p / "x", 0)
    quiet(kq)


def test_directory_chmod_is_attrib_and_rename_is_rename(kq, d, tmp_path):
    p, fd = d
    watch(kq, fd)
    os.chmod(p, 0o700)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]
    os.rename(p, tmp_path / "d2")
    assert events(kq) == [ev(fd, NOTE_RENAME)]


# ---- FreeBSD's notes per operation, in FreeBSD's order across knotes (issue 18) ----------------------
#
# What FreeBSD posts, from its source (sys/kern/vfs_subr.c unless said otherwise), each hook posting to
# the vnodes in the order listed (a knote is queued, so reported, in the order its first note fires):
#
# | operation                     | FreeBSD                                                    | hook            |
# |-------------------------------|------------------------------------------------------------|-----------------|
# | unlink                        | directory NOTE_WRITE, then the file NOTE_DELETE (whatever  | vop_remove_post |
# |                               | links remain)                                              |                 |
# | truncate / ftruncate / O_TRUNC| the file NOTE_ATTRIB (kqrs: + NOTE_TRUNCATE when it shrank)| vop_setattr_post|
# | rename within a directory     | directory NOTE_WRITE (+ NOTE_LINK when a directory is      | vop_rename_post |
# |                               | renamed over), the file NOTE_RENAME, the replaced NOTE_DELETE|               |
# | rename across directories     | source directory NOTE_WRITE|NOTE_EXTEND (+ NOTE_LINK when a| vop_rename_post |
# |                               | directory moves), target directory the same (but no        |                 |
# |                               | NOTE_LINK when the directory replaced a directory), then   |                 |
# |                               | NOTE_RENAME, then the replaced NOTE_DELETE                 |                 |
# | link                          | the file NOTE_LINK, then the directory NOTE_WRITE          | vop_link_post   |
# | mkdir                         | parent NOTE_WRITE|NOTE_LINK                                | vop_mkdir_post  |
# | rmdir                         | parent NOTE_WRITE|NOTE_LINK, then the directory NOTE_DELETE| vop_rmdir_post  |
# | create, symlink, mknod        | directory NOTE_WRITE                                       | vop_create_post,|
# |                               |                                                            | vop_symlink_post|
# | write                         | NOTE_WRITE, + NOTE_EXTEND when it ended past the old size; | VOP_WRITE_POST  |
# |                               | nothing for an empty write                                 | (sys/vnode.h)   |
# | chmod / chown / utimes        | NOTE_ATTRIB                                                | vop_setattr_post|
# | set/delete extended attribute | NOTE_ATTRIB                                                | vop_setextattr_post, vop_deleteextattr_post |
#
# Each test below watches the directory and the file(s) in one kqueue and collects with room for all.


@pytest.fixture
def tree(tmp_path, fds):
    """D/f (3 bytes), D/g (1 byte), D/s/ and E/t (1 byte), E/u/: paths and O_RDONLY fds."""
    D, E = tmp_path / "D", tmp_path / "E"
    for p in (D, D / "s", E, E / "u"):
        p.mkdir()
    (D / "f").write_bytes(b"abc")
    (D / "g").write_bytes(b"g")
    (E / "t").write_bytes(b"t")
    paths = {"D": D, "f": D / "f", "g": D / "g", "s": D / "s", "E": E, "t": E / "t", "u": E / "u"}
    return paths, {name: fds(p) for name, p in paths.items()}


def watch_each(kq, fd_of, names, fflags=ALL):
    for name in names:
        watch(kq, fd_of[name], fflags)


@pytest.mark.parametrize("order", ["directory_first", "file_first"])
def test_unlink_row(kq, tree, order):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"] if order == "directory_first" else ["f", "D"])
    os.unlink(p["f"])
    assert events(kq) == [ev(fd["D"], NOTE_WRITE), ev(fd["f"], NOTE_DELETE)]


def test_unlink_of_a_file_with_another_link_row(kq, tree):
    """FreeBSD posts NOTE_DELETE for the name removed, though the file lives on under another."""
    p, fd = tree
    os.link(p["f"], p["E"] / "other")
    watch_each(kq, fd, ["f", "D"])
    os.unlink(p["f"])
    assert events(kq) == [ev(fd["D"], NOTE_WRITE), ev(fd["f"], NOTE_DELETE)]


@pytest.mark.parametrize("how", ["truncate", "ftruncate", "o_trunc"])
def test_truncate_row(kq, tree, how):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"])
    if how == "truncate":
        os.truncate(p["f"], 1)
    elif how == "ftruncate":
        w = os.open(p["f"], os.O_WRONLY)
        os.ftruncate(w, 1)
        os.close(w)
    else:
        os.close(os.open(p["f"], os.O_WRONLY | os.O_TRUNC))
    assert events(kq) == [ev(fd["f"], NOTE_ATTRIB | NOTE_TRUNCATE)]


def test_truncate_row_with_freebsds_notes(kq, tree):
    """A program written for FreeBSD asks for its own notes only: the truncation is its NOTE_ATTRIB."""
    p, fd = tree
    watch_each(kq, fd, ["D", "f"], FREEBSD)
    os.truncate(p["f"], 0)
    assert events(kq) == [ev(fd["f"], NOTE_ATTRIB)]


@pytest.mark.xfail(
    strict=True,
    reason="Linux cannot say it: truncate(2) to the same or a larger size reports "
    "IN_MODIFY, as a write does, and the size alone cannot tell a truncation "
    "that grew the file from a write past its end (docs/design.md)",
)
@pytest.mark.parametrize("size", [3, 100])
def test_truncate_row_to_the_same_or_a_larger_size(kq, tree, size):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"])
    os.truncate(p["f"], size)
    assert events(kq) == [ev(fd["f"], NOTE_ATTRIB)]


def test_rename_within_a_directory_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["f", "D"])
    os.rename(p["f"], p["D"] / "new")
    assert events(kq) == [ev(fd["D"], NOTE_WRITE), ev(fd["f"], NOTE_RENAME)]


@pytest.mark.parametrize("order", ["replaced_first", "directory_last"])
def test_rename_within_a_directory_over_a_file_row(kq, tree, order):
    p, fd = tree
    watch_each(kq, fd, ["g", "f", "D"] if order == "replaced_first" else ["f", "g", "D"])
    os.rename(p["f"], p["g"])
    assert events(kq) == [ev(fd["D"], NOTE_WRITE), ev(fd["f"], NOTE_RENAME), ev(fd["g"], NOTE_DELETE)]


def test_rename_of_a_directory_within_a_directory_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["s", "D"])
    os.rename(p["s"], p["D"] / "s2")
    assert events(kq) == [ev(fd["D"], NOTE_WRITE), ev(fd["s"], NOTE_RENAME)]


def test_rename_within_a_directory_over_a_directory_row(kq, tree, fds):
    """A directory renamed over another: the parent loses a link (NOTE_LINK)."""
    p, fd = tree
    (p["D"] / "v").mkdir()
    v = fds(p["D"] / "v")
    watch(kq, v)
    watch_each(kq, fd, ["s", "D"])
    os.rename(p["s"], p["D"] / "v")
    assert events(kq) == [ev(fd["D"], NOTE_WRITE | NOTE_LINK), ev(fd["s"], NOTE_RENAME), ev(v, NOTE_DELETE)]


def test_rename_across_directories_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["f", "E", "D"])
    os.rename(p["f"], p["E"] / "f")
    assert events(kq) == [
        ev(fd["D"], NOTE_WRITE | NOTE_EXTEND),
        ev(fd["E"], NOTE_WRITE | NOTE_EXTEND),
        ev(fd["f"], NOTE_RENAME),
    ]


def test_rename_across_directories_over_a_file_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["t", "f", "E", "D"])
    os.rename(p["f"], p["t"])
    assert events(kq) == [
        ev(fd["D"], NOTE_WRITE | NOTE_EXTEND),
        ev(fd["E"], NOTE_WRITE | NOTE_EXTEND),
        ev(fd["f"], NOTE_RENAME),
        ev(fd["t"], NOTE_DELETE),
    ]


def test_rename_of_a_directory_across_directories_row(kq, tree):
    """A directory moved: both parents' link counts change (NOTE_LINK on both)."""
    p, fd = tree
    watch_each(kq, fd, ["s", "E", "D"])
    os.rename(p["s"], p["E"] / "s")
    assert events(kq) == [
        ev(fd["D"], NOTE_WRITE | NOTE_EXTEND | NOTE_LINK),
        ev(fd["E"], NOTE_WRITE | NOTE_EXTEND | NOTE_LINK),
        ev(fd["s"], NOTE_RENAME),
    ]


def test_rename_of_a_directory_across_directories_over_a_directory_row(kq, tree):
    """The target directory's link count is unchanged (one subdirectory replaced another): no NOTE_LINK
    there (vop_rename_post clears it), and the replaced directory NOTE_DELETE."""
    p, fd = tree
    watch_each(kq, fd, ["u", "s", "E", "D"])
    os.rename(p["s"], p["u"])
    assert events(kq) == [
        ev(fd["D"], NOTE_WRITE | NOTE_EXTEND | NOTE_LINK),
        ev(fd["E"], NOTE_WRITE | NOTE_EXTEND),
        ev(fd["s"], NOTE_RENAME),
        ev(fd["u"], NOTE_DELETE),
    ]


@pytest.mark.parametrize("order", ["directory_first", "file_first"])
def test_link_row(kq, tree, order):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"] if order == "directory_first" else ["f", "D"])
    os.link(p["f"], p["D"] / "hard")
    assert events(kq) == [ev(fd["f"], NOTE_LINK), ev(fd["D"], NOTE_WRITE)]


def test_link_into_another_directory_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["E", "D", "f"])
    os.link(p["f"], p["E"] / "hard")
    assert events(kq) == [ev(fd["f"], NOTE_LINK), ev(fd["E"], NOTE_WRITE)]


def test_mkdir_row(kq, tree):
    p, fd = tree
    watch_each(kq, fd, ["s", "D"])
    os.mkdir(p["D"] / "new")
    assert events(kq) == [ev(fd["D"], NOTE_WRITE | NOTE_LINK)]


@pytest.mark.parametrize("order", ["directory_first", "parent_first"])
def test_rmdir_row(kq, tree, order):
    """The parent's NOTE_WRITE|NOTE_LINK, then the removed directory's NOTE_DELETE. (Linux says nothing to the
    removed directory itself: kqrs learns it from its parent's event, on the watch the parent's knote shares
    with kqrs's own parent watch; see test_rmdir_of_a_watched_directory_is_delete.)"""
    p, fd = tree
    watch_each(kq, fd, ["s", "D"] if order == "directory_first" else ["D", "s"])
    os.rmdir(p["s"])
    assert events(kq) == [ev(fd["D"], NOTE_WRITE | NOTE_LINK), ev(fd["s"], NOTE_DELETE)]


def test_rmdir_row_for_directories_of_the_same_name(kq, tmp_path, fds):
    """Several directories removed in one batch, two of them named alike: each NOTE_DELETE goes to the one
    its parent's event named, right after that parent's note."""
    for sub in ("a", "a/x", "b", "b/x"):
        (tmp_path / sub).mkdir()
    fd = {sub: fds(tmp_path / sub) for sub in ("a", "a/x", "b", "b/x")}
    for sub in ("b/x", "a/x", "b", "a"):
        watch(kq, fd[sub])
    os.rmdir(tmp_path / "a" / "x")
    os.rmdir(tmp_path / "b" / "x")
    assert events(kq) == [
        ev(fd["a"], NOTE_WRITE | NOTE_LINK),
        ev(fd["a/x"], NOTE_DELETE),
        ev(fd["b"], NOTE_WRITE | NOTE_LINK),
        ev(fd["b/x"], NOTE_DELETE),
    ]


# ---- rmdir and the internal parent watch -------------------------------------------------------------
#
# inotify tells the rmdir of an open directory only to its parent (IN_DELETE|IN_ISDIR, with the name). A
# directory knote asking for NOTE_DELETE shares an internal watch on its parent (IN_DELETE only, added to
# whatever a user knote's watch on that inode has), remembers its name there, and gets NOTE_DELETE when the
# parent's event names it and its own fstat shows no links left. These tests look at the watches themselves
# in /proc/self/fdinfo of the kqueue's inotify instance.

IN_DELETE = 0x200
IN_ALL_EVENTS = 0xFFF


def inotify_watches(marker):
    """{inode: mask} of the inotify instance that watches the file open as `marker` (the kqueue's own:
    the test keeps a knote on a file of its own there)."""
    ino = os.fstat(marker).st_ino
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{name}") as fh:
                lines = fh.read().splitlines()
        except OSError:
            continue
        watches = {}
        for line in lines:
            if line.startswith("inotify wd:"):
                fields = dict(field.split(":", 1) for field in line.split()[1:])
                watches[int(fields["ino"], 16)] = int(fields["mask"], 16) & IN_ALL_EVENTS
        if ino in watches:
            return watches
    raise AssertionError("no inotify instance watches the marker")


@pytest.fixture
def marker(kq, tmp_path, fds):
    """A file with a knote of its own, so the kqueue's inotify instance can be found (`inotify_watches`)."""
    p = tmp_path / "marker"
    p.write_bytes(b"")
    fd = fds(p)
    watch(kq, fd, NOTE_ATTRIB)
    return fd


def ino(path):
    return os.stat(path).st_ino


def test_rmdir_with_the_parent_not_watched_and_its_other_entries_say_nothing(kq, tmp_path, fds, marker):
    """The parent is watched for kqrs alone: files made, written, removed there, another directory made and
    removed, report nothing to anyone; only the watched directory's own rmdir does."""
    top = tmp_path / "top"
    (top / "d").mkdir(parents=True)
    fd = fds(top / "d")
    watch(kq, fd)
    assert inotify_watches(marker)[ino(top)] == IN_DELETE  # only that
    (top / "file").write_bytes(b"x")
    append(top / "file")
    os.unlink(top / "file")
    (top / "other").mkdir()
    os.rmdir(top / "other")
    (top / "d2").mkdir()  # a name that begins like the watched one
    os.rmdir(top / "d2")
    quiet(kq)
    os.rmdir(top / "d")
    assert events(kq) == [ev(fd, NOTE_DELETE)]
    quiet(kq)
    assert ino(top) not in inotify_watches(marker)  # the parent watch went with the directory


def test_rmdir_of_one_of_two_directories_of_the_same_name_in_parents_not_watched(kq, tmp_path, fds):
    """a/x and b/x: the parent's watch (one per inode) tells which x was removed."""
    for sub in ("a", "a/x", "b", "b/x"):
        (tmp_path / sub).mkdir()
    ax, bx = fds(tmp_path / "a" / "x"), fds(tmp_path / "b" / "x")
    watch(kq, ax, udata=1)
    watch(kq, bx, udata=2)
    os.rmdir(tmp_path / "b" / "x")
    assert events(kq) == [ev(bx, NOTE_DELETE, udata=2)]
    quiet(kq)
    (tmp_path / "b" / "x").mkdir()  # a new b/x, not watched
    os.rmdir(tmp_path / "b" / "x")
    quiet(kq)
    os.rmdir(tmp_path / "a" / "x")
    assert events(kq) == [ev(ax, NOTE_DELETE, udata=1)]


def test_rmdir_of_several_subdirectories_sharing_one_parent_watch(kq, tmp_path, fds, marker):
    """The parent watch is counted: the knote of one subdirectory going keeps it for the other."""
    for sub in ("p", "p/x", "p/y"):
        (tmp_path / sub).mkdir()
    x, y = fds(tmp_path / "p" / "x"), fds(tmp_path / "p" / "y")
    watch(kq, x)
    watch(kq, y)
    kq.control([vnode(x, flags=DELETE)], 0)
    assert inotify_watches(marker)[ino(tmp_path / "p")] == IN_DELETE
    os.rmdir(tmp_path / "p" / "x")
    quiet(kq)
    os.rmdir(tmp_path / "p" / "y")
    assert events(kq) == [ev(y, NOTE_DELETE)]


@pytest.mark.parametrize("notes", [NOTE_ATTRIB, NOTE_ATTRIB | NOTE_OPEN])
def test_rmdir_with_the_parent_watched_by_a_knote_asking_for_little(kq, tmp_path, fds, marker, notes):
    """The parent's own knote keeps its semantics (no note it did not ask for, its own notes still come);
    the internal watch never narrows the user's watch, and deleting the user's knote narrows the watch back
    to what the internal one needs, which keeps working."""
    top = tmp_path / "top"
    for sub in ("top", "top/x", "top/y"):
        (tmp_path / sub).mkdir()
    pfd, x, y = fds(top), fds(top / "x"), fds(top / "y")
    watch(kq, pfd, notes, udata=9)
    watch(kq, x)
    watch(kq, y)
    assert inotify_watches(marker)[ino(top)] & IN_DELETE
    os.rmdir(top / "x")
    assert events(kq) == [ev(x, NOTE_DELETE)]  # nothing for the parent's knote: it asked for none of it
    os.chmod(top, 0o700)
    assert events(kq) == [ev(pfd, NOTE_ATTRIB, udata=9)]
    if notes & NOTE_OPEN:
        os.close(os.open(top, os.O_RDONLY))
        assert events(kq) == [ev(pfd, NOTE_OPEN, udata=9)]
    kq.control([vnode(pfd, flags=DELETE)], 0)
    assert inotify_watches(marker)[ino(top)] == IN_DELETE  # narrowed to what the internal watch needs
    os.chmod(top, 0o755)
    os.close(os.open(top, os.O_RDONLY))
    quiet(kq)
    os.rmdir(top / "y")
    assert events(kq) == [ev(y, NOTE_DELETE)]
    assert ino(top) not in inotify_watches(marker)


def test_rmdir_with_a_read_knote_on_the_parent(kq, tmp_path, fds, marker):
    """A READ knote on the parent directory shares the watch: the internal watch's events are nothing to it."""
    top = tmp_path / "top"
    (top / "x").mkdir(parents=True)
    pfd, x = fds(top), fds(top / "x")
    assert kq.control([kevent(pfd, kqrs.KQ_FILTER_READ, ADD | CLEAR)], 0) == []
    assert [e.ident for e in kq.control(None, 4, 0.1)] == [pfd]  # readable once (EV_CLEAR)
    watch(kq, x)
    (top / "f").write_bytes(b"")
    os.unlink(top / "f")
    quiet(kq)
    os.rmdir(top / "x")
    assert events(kq) == [ev(x, NOTE_DELETE)]
    quiet(kq)
    assert inotify_watches(marker)[ino(top)] == 0x2  # IN_MODIFY: the READ knote's own, as before


def test_directory_knote_deleted_before_the_rmdir_leaves_no_watch(kq, tmp_path, fds, marker):
    top = tmp_path / "top"
    (top / "d").mkdir(parents=True)
    fd = fds(top / "d")
    watch(kq, fd)
    assert ino(top) in inotify_watches(marker)
    kq.control([vnode(fd, flags=DELETE)], 0)
    watches = inotify_watches(marker)
    assert ino(top) not in watches and ino(top / "d") not in watches
    os.rmdir(top / "d")
    quiet(kq)


def test_directory_knote_gone_with_its_fd_leaves_no_watch(kq, tmp_path, fds, marker):
    """Closed: the knote goes when that is noticed (here by the next event on its directory), the parent
    watch with it."""
    top = tmp_path / "top"
    (top / "d").mkdir(parents=True)
    fd = os.open(top / "d", os.O_RDONLY)
    watch(kq, fd)
    os.close(fd)
    os.rmdir(top / "d")  # the last reference: the directory's watch reports IN_DELETE_SELF
    quiet(kq)
    assert ino(top) not in inotify_watches(marker)


def test_only_a_directory_knote_asking_for_delete_watches_the_parent(kq, tmp_path, fds, marker):
    """A directory watched for its entries alone is not woken by its siblings' removal; asking for
    NOTE_DELETE later watches the parent from then on, and no longer asking stops."""
    top = tmp_path / "top"
    (top / "d").mkdir(parents=True)
    fd = fds(top / "d")
    watch(kq, fd, NOTE_WRITE)
    assert ino(top) not in inotify_watches(marker)
    watch(kq, fd, NOTE_WRITE | NOTE_DELETE)
    assert inotify_watches(marker)[ino(top)] == IN_DELETE
    watch(kq, fd, NOTE_WRITE)
    assert ino(top) not in inotify_watches(marker)
    watch(kq, fd, NOTE_DELETE)
    os.rmdir(top / "d")
    assert events(kq) == [ev(fd, NOTE_DELETE)]


@pytest.mark.parametrize("where", ["another_parent", "same_parent"])
def test_rmdir_after_the_directory_was_renamed(kq, tmp_path, fds, marker, where):
    """Renamed: the parent watch moves to the parent it has now (under its new name), so its rmdir there is
    NOTE_DELETE; a new directory at its old path, removed, is nothing to it."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    b.mkdir()
    fd = fds(a / "d")
    watch(kq, fd)
    new = (b if where == "another_parent" else a) / "e"
    os.rename(a / "d", new)
    assert events(kq) == [ev(fd, NOTE_RENAME)]
    watches = inotify_watches(marker)
    assert watches[ino(new.parent)] == IN_DELETE
    if where == "another_parent":
        assert ino(a) not in watches
    (a / "d").mkdir()
    os.rmdir(a / "d")
    quiet(kq)
    os.rmdir(new)
    assert events(kq) == [ev(fd, NOTE_DELETE)]


def test_rename_and_rmdir_in_one_batch(kq, tmp_path, fds, marker):
    """Moved to a parent nobody watches and removed before kqrs read the rename: its own fstat says it."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    b.mkdir()
    fd = fds(a / "d")
    watch(kq, fd)
    os.rename(a / "d", b / "d")
    os.rmdir(b / "d")
    assert events(kq) == [ev(fd, NOTE_RENAME | NOTE_DELETE)]
    watches = inotify_watches(marker)
    assert ino(a) not in watches and ino(b) not in watches


@pytest.mark.parametrize("how", ["create", "symlink", "mkfifo"])
def test_create_row(kq, tree, how):
    p, fd = tree
    watch_each(kq, fd, ["f", "D"])
    {"create": lambda q: q.write_bytes(b""), "symlink": lambda q: os.symlink("f", q), "mkfifo": os.mkfifo}[how](
        p["D"] / "new"
    )
    assert events(kq) == [ev(fd["D"], NOTE_WRITE)]


@pytest.mark.parametrize(
    "how, notes",
    [
        ("overwrite", NOTE_WRITE),
        ("append", NOTE_WRITE | NOTE_EXTEND),
        ("pwrite_past_the_end", NOTE_WRITE | NOTE_EXTEND),
        ("empty", 0),
    ],
)
def test_write_row(kq, tree, how, notes):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"])
    w = os.open(p["f"], os.O_WRONLY | (os.O_APPEND if how == "append" else 0))
    try:
        if how == "pwrite_past_the_end":
            os.pwrite(w, b"z", 10)
        else:
            os.write(w, b"" if how == "empty" else b"xy")
    finally:
        os.close(w)
    assert events(kq, timeout=0.2) == ([ev(fd["f"], notes)] if notes else [])


@pytest.mark.parametrize("how", ["chmod", "chown", "utime", "setxattr"])
def test_attribute_row(kq, tree, how):
    p, fd = tree
    watch_each(kq, fd, ["D", "f"])
    st = os.stat(p["f"])
    if how == "chmod":
        os.chmod(p["f"], 0o600)
    elif how == "chown":
        os.chown(p["f"], st.st_uid, st.st_gid)
    elif how == "utime":
        os.utime(p["f"], (1, 2))
    else:
        try:
            os.setxattr(p["f"], "user.kqrs", b"1")
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EPERM):
                pytest.skip(f"no user xattrs here: {e}")
            raise
    assert events(kq) == [ev(fd["f"], NOTE_ATTRIB)]


def test_operations_in_one_batch_keep_their_order(kq, tree):
    """Several operations read in one inotify batch: each keeps its place (a chmod, then someone else's
    unlink: the chmod-ed file first), and each operation's own order is FreeBSD's."""
    p, fd = tree
    watch_each(kq, fd, ["g", "f", "D"])
    os.chmod(p["f"], 0o600)
    os.unlink(p["g"])
    os.rename(p["f"], p["D"] / "f2")
    assert events(kq) == [ev(fd["f"], NOTE_ATTRIB | NOTE_RENAME), ev(fd["D"], NOTE_WRITE), ev(fd["g"], NOTE_DELETE)]


def test_an_unlink_then_a_rename_in_one_batch(kq, tree):
    """The unlinked file's NOTE_DELETE moves after its directory's NOTE_WRITE, never after the rename that
    came later."""
    p, fd = tree
    watch_each(kq, fd, ["g", "f"])
    os.unlink(p["g"])
    os.rename(p["f"], p["D"] / "f2")
    assert events(kq) == [ev(fd["g"], NOTE_DELETE), ev(fd["f"], NOTE_RENAME)]


# ---- NOTE_REVOKE -----------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path, effective_caps):
    if shutil.which("mount") is None or not effective_caps >> 21 & 1:  # CAP_SYS_ADMIN
        pytest.skip("mounting needs CAP_SYS_ADMIN and mount(8)")
    m = tmp_path / "mnt"
    m.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kqrs-test", str(m)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs with CAP_SYS_ADMIN: {r.stderr.strip()}"
    yield m
    subprocess.run(["umount", "-l", str(m)], capture_output=True)


@pytest.mark.thread_unsafe
def test_unmount_is_revoke_with_eof(kq, tmpfs, fds):
    p = tmpfs / "f"
    p.write_bytes(b"x")
    fd = fds(p)
    watch(kq, fd, udata=5)
    r = subprocess.run(["umount", "-l", str(tmpfs)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [(ident, filt, flags, notes, data, udata)] = events(kq, 0.5)
    assert (ident, filt, flags & EOF, udata) == (fd, VNODE, EOF, 5)
    assert "REVOKE" in notes.split("|")


@pytest.mark.thread_unsafe
def test_file_on_a_tmpfs_reports_like_any_other(kq, tmpfs, fds):
    p = tmpfs / "f"
    p.write_bytes(b"x")
    fd = fds(p)
    watch(kq, fd)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


# ---- the knote follows the open file ---------------------------------------------------------------


def test_renamed_file_is_still_watched_and_the_new_file_at_its_old_path_is_not(kq, f, tmp_path):
    p, fd = f
    watch(kq, fd)
    os.rename(p, tmp_path / "moved")
    assert events(kq) == [ev(fd, NOTE_RENAME)]
    p.write_bytes(b"a new file at the old path")
    append(p)
    os.chmod(p, 0o600)
    quiet(kq)
    append(tmp_path / "moved")
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


def test_unlinked_file_is_still_watched_through_its_fd(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"")
    fd = fds(p, os.O_RDWR)
    watch(kq, fd)
    os.unlink(p)
    assert events(kq) == [ev(fd, NOTE_DELETE)]
    p.write_bytes(b"another file")
    quiet(kq)
    os.write(fd, b"still here")
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


def test_closing_the_fd_drops_the_knote(kq, tmp_path):
    p = tmp_path / "g"
    p.write_bytes(b"")
    fd = os.open(p, os.O_RDONLY)
    watch(kq, fd)
    os.close(fd)
    append(p)
    quiet(kq)
    assert kq._stats()[0] == 0


def test_reused_fd_number_watches_the_new_file(kq, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.write_bytes(b"")
    fa = os.open(a, os.O_RDONLY)
    watch(kq, fa)
    os.close(fa)
    fb = os.open(b, os.O_RDONLY)
    try:
        assert fb == fa  # the lowest free number
        watch(kq, fb)  # a new knote on the new file (BSD removed the old one at close)
        append(a)
        append(b)
        assert events(kq) == [ev(fb, NOTE_WRITE | NOTE_EXTEND)]
    finally:
        os.close(fb)


def test_two_fds_on_one_file_both_report(kq, f, fds):
    p, fd = f
    fd2 = fds(p)
    watch(kq, fd, udata=1)
    watch(kq, fd2, NOTE_WRITE | NOTE_ATTRIB, udata=2)
    append(p)
    want = NOTE_WRITE | NOTE_EXTEND  # the whole hint (see test_only_the_notes_asked_for_are_reported)
    assert sorted(events(kq)) == sorted([ev(fd, want, udata=1), ev(fd2, want, udata=2)])
    watch(kq, fd, flags=DELETE)
    overwrite(p, b"q")
    assert events(kq) == [ev(fd2, NOTE_WRITE, udata=2)]


def test_two_kqueues_watching_one_file_are_independent(f):
    p, fd = f
    with kqrs.kqueue() as a, kqrs.kqueue() as b:
        watch(a, fd, udata=1)
        watch(b, fd, udata=2)
        append(p)
        assert events(a) == [ev(fd, NOTE_WRITE | NOTE_EXTEND, udata=1)]
        os.chmod(p, 0o600)
        assert events(b) == [ev(fd, NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB, udata=2)]
        assert events(a) == [ev(fd, NOTE_ATTRIB, udata=1)]


def test_vnode_and_read_knotes_on_one_file_share_the_watch(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_WRITE)
    assert kq.control([kevent(fd, kqrs.KQ_FILTER_READ, ADD | CLEAR)], 0) == []
    got = {e.filter for e in kq.control(None, 4, 0)}
    assert got == {kqrs.KQ_FILTER_READ}  # 3 unread bytes
    watch(kq, fd, flags=DELETE)  # the READ knote keeps its share
    append(p)
    [e] = kq.control(None, 4, 0.5)
    assert (e.filter, e.data) == (kqrs.KQ_FILTER_READ, 4)
    watch(kq, fd, NOTE_ATTRIB)
    assert kq.control([kevent(fd, kqrs.KQ_FILTER_READ, DELETE)], 0) == []  # the vnode knote keeps its share
    os.chmod(p, 0o600)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


# ---- coalescing, EV_CLEAR, enable/disable, oneshot, dispatch ----------------------------------------


def test_notes_coalesce_into_one_event(kq, f, tmp_path):
    p, fd = f
    watch(kq, fd)
    append(p)
    os.chmod(p, 0o600)
    os.link(p, tmp_path / "hard")
    overwrite(p, b"zz")
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_LINK)]
    quiet(kq)


@pytest.mark.parametrize(
    "first,then,expected",
    [
        ("chmod", "append", NOTE_ATTRIB | NOTE_WRITE | NOTE_EXTEND),
        ("chmod", "truncate", NOTE_ATTRIB | NOTE_TRUNCATE),
        ("link", "append", NOTE_LINK | NOTE_WRITE | NOTE_EXTEND),
    ],
)
def test_notes_coalesce_whatever_their_order(kq, f, tmp_path, first, then, expected):
    p, fd = f
    watch(kq, fd)
    if first == "chmod":
        os.chmod(p, 0o600)
    else:
        os.link(p, tmp_path / "hard")
    if then == "append":
        append(p)
    else:
        os.truncate(p, 1)
    assert events(kq) == [ev(fd, expected)]


@pytest.mark.parametrize(
    "ops, fflags, expected",
    [
        # the truncation is seen through the chmod's event; its own IN_MODIFY is not a further write
        (("chmod", "truncate"), FREEBSD, NOTE_ATTRIB),
        # the new link is seen through the write's event; its own IN_ATTRIB is not an attribute change
        (("append", "link"), ALL, NOTE_WRITE | NOTE_EXTEND | NOTE_LINK),
        (("append", "unlink_other"), ALL, NOTE_WRITE | NOTE_EXTEND | NOTE_DELETE),
    ],
)
def test_a_change_seen_before_its_own_event_is_counted_once(kq, f, tmp_path, ops, fflags, expected):
    p, fd = f
    os.link(p, tmp_path / "other")
    watch(kq, fd, fflags)
    for op in ops:
        {
            "chmod": lambda: os.chmod(p, 0o600),
            "truncate": lambda: os.truncate(p, 1),
            "append": lambda: append(p),
            "link": lambda: os.link(p, tmp_path / "hard"),
            "unlink_other": lambda: os.unlink(tmp_path / "other"),
        }[op]()
    assert events(kq) == [ev(fd, expected)]
    quiet(kq)


def test_ev_clear_resets_the_notes(kq, f):
    p, fd = f
    watch(kq, fd)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]
    quiet(kq)
    os.chmod(p, 0o600)
    assert events(kq) == [ev(fd, NOTE_ATTRIB)]


def test_without_ev_clear_the_notes_repeat_every_call_and_accumulate(kq, f):
    p, fd = f
    watch(kq, fd, flags=ADD)
    quiet(kq)
    append(p)
    for _ in range(3):
        assert events(kq, 0) == [ev(fd, NOTE_WRITE | NOTE_EXTEND, flags=0)]
    os.chmod(p, 0o600)
    for _ in range(2):
        assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB, flags=0)]
    watch(kq, fd, flags=DELETE)
    quiet(kq)


def test_changes_while_disabled_are_reported_once_enabled(kq, f):
    p, fd = f
    watch(kq, fd)
    watch(kq, fd, flags=DISABLE)
    append(p)
    os.chmod(p, 0o600)
    quiet(kq)
    watch(kq, fd, flags=ENABLE)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB)]
    quiet(kq)


def test_disable_drops_pending_notes(kq, f, fds):
    """Two knotes on one file; collecting one event reads the change for both, so the other has it
    pending: EV_DISABLE drops it (vnode.rs), EV_ENABLE reports only later changes."""
    p, fd = f
    fd2 = fds(p)
    watch(kq, fd)
    watch(kq, fd2)
    append(p)
    [first] = kq.control(None, 1, 0.5)
    other = fd2 if first.ident == fd else fd
    watch(kq, other, flags=DISABLE)
    quiet(kq)
    watch(kq, other, flags=ENABLE)
    quiet(kq)
    os.chmod(p, 0o600)
    assert sorted(events(kq)) == sorted([ev(fd, NOTE_ATTRIB), ev(fd2, NOTE_ATTRIB)])


def test_disable_drops_a_change_made_just_before_it(kq, f):
    p, fd = f
    watch(kq, fd)
    append(p)  # made before EV_DISABLE, as pending as in the test above
    watch(kq, fd, flags=DISABLE)
    quiet(kq)
    watch(kq, fd, flags=ENABLE)
    quiet(kq)


def test_disabled_without_changes_stays_quiet_when_enabled(kq, f):
    p, fd = f
    watch(kq, fd, flags=ADD | CLEAR | DISABLE)
    quiet(kq)
    watch(kq, fd, flags=ENABLE)
    quiet(kq)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


def test_oneshot_reports_once_and_the_knote_is_gone(kq, f):
    p, fd = f
    watch(kq, fd, flags=ADD | ONESHOT)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND, flags=ONESHOT)]
    assert kq._stats()[0] == 0
    append(p)
    quiet(kq)


def test_dispatch_reports_once_until_enabled(kq, f):
    p, fd = f
    watch(kq, fd, flags=ADD | CLEAR | DISPATCH)
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND, flags=CLEAR | DISPATCH)]
    os.chmod(p, 0o600)
    quiet(kq)
    watch(kq, fd, flags=ENABLE)
    assert events(kq) == [ev(fd, NOTE_ATTRIB, flags=CLEAR | DISPATCH)]


def test_delete_drops_pending_notes(kq, f):
    p, fd = f
    watch(kq, fd)
    append(p)
    watch(kq, fd, flags=DELETE)
    quiet(kq)
    assert kq._stats()[0] == 0


def test_change_then_collect_in_one_call(kq, f):
    p, fd = f
    append(p)  # before the knote: not reported
    got = kq.control([vnode(fd)], 4, 0)
    assert got == []
    append(p)
    assert events(kq) == [ev(fd, NOTE_WRITE | NOTE_EXTEND)]


def test_a_change_wakes_a_blocked_control_in_another_thread(kq, f):
    p, fd = f
    watch(kq, fd)
    got = []
    t = threading.Thread(target=lambda: got.append(events(kq, 5)))
    t.start()
    time.sleep(0.05)
    append(p)
    t.join(5)
    assert not t.is_alive()
    assert got == [[ev(fd, NOTE_WRITE | NOTE_EXTEND)]]


def _inotify_fds() -> int:
    n = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify"
        except OSError:
            pass
    return n


def test_one_inotify_instance_per_kqueue(kq, tmp_path, fds):
    before = kqrs._kqrs._owned_fd_count()
    inotify_before = _inotify_fds()
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"")
        watch(kq, fds(p))
    assert _inotify_fds() - inotify_before <= 1
    # one inotify instance and the kqueue's timer source (its kick), plus /proc/self/mountinfo once a knote
    # asks for NOTE_REVOKE: a fixed number per kqueue, none per knote
    assert kqrs._kqrs._owned_fd_count() - before <= 3
    assert kq._stats()[0] == 20


# ---- no false wake-ups -----------------------------------------------------------------------------


def _use(path, n, directory=False):
    """Opens, reads and closes `path` (lists it, for a directory) n times, and stats it."""
    for _ in range(n):
        if directory:
            os.listdir(path)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 100)
        os.fstat(fd)
        os.close(fd)
        os.stat(path)
        os.access(path, os.R_OK)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_open_read_close_never_wakes_control(kq, f, d, what):
    p, fd = f if what == "file" else d
    if what == "directory":
        (p / "x").write_bytes(b"abc")
    watch(kq, fd)
    absorbed = kq._stats()[1]
    t0 = time.monotonic()
    done = threading.Event()

    def other():
        while not done.is_set():
            _use(p, 20, directory=what == "directory")
            if what == "directory":
                _use(p / "x", 20)  # its entries used, too
            time.sleep(0.005)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert kq.control(None, 4, 0.3) == []
    finally:
        done.set()
        t.join(5)
    assert time.monotonic() - t0 >= 0.29  # returned at the timeout, not before
    assert kq._stats()[1] == absorbed  # and was never woken


def test_blocked_control_without_timeout_keeps_waiting_through_reads(kq, f):
    """No timeout: many opens/reads/closes, then one write; control() returns once, with the write,
    and absorbed no wake-up on the way."""
    p, fd = f
    watch(kq, fd)
    absorbed = kq._stats()[1]
    returns = []

    def waiter():
        returns.append(events(kq, None))

    t = threading.Thread(target=waiter)
    t.start()
    try:
        _use(p, 200)
        time.sleep(0.05)
        assert returns == []  # still waiting
        append(p)
        t.join(5)
    finally:
        if t.is_alive():
            append(p)
            t.join(5)
    assert returns == [[ev(fd, NOTE_WRITE | NOTE_EXTEND)]]
    assert kq._stats()[1] == absorbed


def test_reads_through_the_watched_fd_never_wake(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"x" * 10000)
    fd = fds(p)
    watch(kq, fd)
    absorbed = kq._stats()[1]
    for _ in range(50):
        os.pread(fd, 4096, 0)
    quiet(kq)
    assert kq._stats()[1] == absorbed


# ---- the opt-in NOTE_OPEN, NOTE_CLOSE, NOTE_CLOSE_WRITE, NOTE_READ -----------------------------------
#
# FreeBSD 11's vop_open_post (NOTE_OPEN), vop_close_post (NOTE_CLOSE_WRITE for a file description opened
# for writing, else NOTE_CLOSE), vop_read_post and vop_readdir_post (NOTE_READ): reported only to a knote
# that asks. kqrs's inotify watch subscribes to IN_OPEN, IN_CLOSE_*, IN_ACCESS only while some knote on the
# inode asks, so nobody else is ever woken by them.


def test_opt_in_values_collide_with_nothing():
    """FreeBSD's values where libkqueue leaves them free; NOTE_OPEN (FreeBSD's 0x80 is libkqueue's
    NOTE_TRUNCATE) on the next free bit."""
    assert (NOTE_OPEN, NOTE_CLOSE, NOTE_CLOSE_WRITE, NOTE_READ) == (0x800, 0x100, 0x200, 0x400)
    bits = [
        NOTE_DELETE,
        NOTE_WRITE,
        NOTE_EXTEND,
        NOTE_ATTRIB,
        NOTE_LINK,
        NOTE_RENAME,
        NOTE_REVOKE,
        NOTE_TRUNCATE,
        NOTE_OPEN,
        NOTE_CLOSE,
        NOTE_CLOSE_WRITE,
        NOTE_READ,
    ]
    assert all(b and b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)
    assert ALL & USE == 0


def test_each_use_of_the_file_is_its_note(kq, f):
    p, fd = f
    watch(kq, fd, USE, udata=4)
    other = os.open(p, os.O_RDONLY)
    assert events(kq) == [ev(fd, NOTE_OPEN, udata=4)]
    os.read(other, 2)
    assert events(kq) == [ev(fd, NOTE_READ, udata=4)]
    os.close(other)
    assert events(kq) == [ev(fd, NOTE_CLOSE, udata=4)]
    w = os.open(p, os.O_WRONLY)
    assert events(kq) == [ev(fd, NOTE_OPEN, udata=4)]
    os.close(w)
    assert events(kq) == [ev(fd, NOTE_CLOSE_WRITE, udata=4)]
    quiet(kq)


def test_reads_through_the_watched_fd_itself_are_read(kq, tmp_path, fds):
    p = tmp_path / "g"
    p.write_bytes(b"x" * 100)
    fd = fds(p)
    watch(kq, fd, NOTE_READ)
    os.pread(fd, 10, 0)
    assert events(kq) == [ev(fd, NOTE_READ)]


def test_use_and_changes_coalesce(kq, f):
    p, fd = f
    watch(kq, fd, ALL | USE)
    append(p)
    assert events(kq) == [ev(fd, NOTE_OPEN | NOTE_WRITE | NOTE_EXTEND | NOTE_CLOSE_WRITE)]


def test_only_the_use_asked_for(kq, f):
    """A knote asking for NOTE_OPEN: reads and closes are not even subscribed (no wake-up at all)."""
    p, fd = f
    watch(kq, fd, NOTE_OPEN)
    other = os.open(p, os.O_RDONLY)
    assert events(kq) == [ev(fd, NOTE_OPEN)]
    absorbed = kq._stats()[1]
    for _ in range(20):
        os.pread(other, 3, 0)
    os.close(other)
    quiet(kq)
    assert kq._stats()[1] == absorbed


def test_directory_listing_is_open_read_close_and_its_entries_use_is_nothing(kq, d):
    p, fd = d
    (p / "x").write_bytes(b"abc")
    watch(kq, fd, USE)
    os.listdir(p)
    assert events(kq) == [ev(fd, NOTE_OPEN | NOTE_READ | NOTE_CLOSE)]
    with open(p / "x", "rb") as fh:  # an entry opened and read: about the entry, not the directory
        fh.read()
    quiet(kq)


def test_a_knote_that_did_not_ask_is_not_told_when_another_on_the_file_asks(kq, f, fds):
    p, fd = f
    fd2 = fds(p)
    watch(kq, fd, ALL, udata=1)
    watch(kq, fd2, USE, udata=2)
    with open(p, "rb") as fh:
        fh.read()
    assert events(kq) == [ev(fd2, NOTE_OPEN | NOTE_READ | NOTE_CLOSE, udata=2)]
    append(p)  # opened (the knote asking is told first), written, closed
    assert events(kq) == [ev(fd2, NOTE_OPEN | NOTE_CLOSE_WRITE, udata=2), ev(fd, NOTE_WRITE | NOTE_EXTEND, udata=1)]


def test_another_kqueue_asking_never_wakes_this_one(kq, f):
    p, fd = f
    watch(kq, fd)
    with kqrs.kqueue() as other:
        watch(other, fd, USE)
        absorbed = kq._stats()[1]
        _use(p, 50)
        quiet(kq)
        assert kq._stats()[1] == absorbed
        assert events(other) == [ev(fd, NOTE_OPEN | NOTE_READ | NOTE_CLOSE)]


@pytest.mark.parametrize("how", ["delete", "modify", "oneshot"])
def test_the_watch_stops_subscribing_when_the_last_knote_asking_goes(kq, f, fds, how):
    """inotify_add_watch with IN_MASK_ADD only widens a watch: when the knote asking goes (or stops asking),
    the watch is set again to what the knotes left need, and using the file wakes nothing any more."""
    p, fd = f
    fd2 = fds(p)
    watch(kq, fd, ALL, udata=1)
    watch(kq, fd2, NOTE_READ | NOTE_OPEN, flags=ADD | (ONESHOT if how == "oneshot" else CLEAR), udata=2)
    _use(p, 1)
    got = events(kq)
    assert [(e[0], e[3]) for e in got] == [(fd2, "OPEN|READ")]
    if how == "delete":
        watch(kq, fd2, flags=DELETE)
    elif how == "modify":
        watch(kq, fd2, NOTE_WRITE, udata=2)
    absorbed = kq._stats()[1]
    _use(p, 50)
    quiet(kq)
    assert kq._stats()[1] == absorbed
    append(p)  # changes still reach both
    want = [ev(fd, NOTE_WRITE | NOTE_EXTEND, udata=1)]
    if how == "modify":
        want.append(ev(fd2, NOTE_WRITE | NOTE_EXTEND, udata=2))  # the whole hint
    assert events(kq) == want


def test_the_watch_keeps_what_a_remaining_knote_still_asks_for(kq, f, fds):
    p, fd = f
    fd2, fd3 = fds(p), fds(p)
    watch(kq, fd, NOTE_READ, udata=1)
    watch(kq, fd2, NOTE_READ | NOTE_OPEN, udata=2)
    watch(kq, fd3, ALL, udata=3)
    watch(kq, fd2, flags=DELETE)
    absorbed = kq._stats()[1]
    with open(p, "rb") as fh:  # the open is subscribed no more; the read still is
        assert kq.control(None, 4, 0.1) == []
        assert kq._stats()[1] == absorbed
        fh.read()
        assert events(kq) == [ev(fd, NOTE_READ, udata=1)]


def test_a_read_knote_on_the_file_is_not_woken_by_reads_a_vnode_knote_asked_for(kq, f, fds):
    """A READ knote on a regular file is looked at again when it is written (IN_MODIFY), not when someone
    reads it because a vnode knote on it asked for NOTE_READ."""
    p, fd = f
    rfd = fds(p)
    assert kq.control([kevent(rfd, kqrs.KQ_FILTER_READ, ADD | CLEAR, 0, 0, 7)], 0) == []
    assert [(e.filter, e.data) for e in kq.control(None, 4, 0.5)] == [(kqrs.KQ_FILTER_READ, 3)]
    watch(kq, fd, NOTE_READ, udata=1)
    os.pread(fd, 3, 0)
    assert events(kq) == [ev(fd, NOTE_READ, udata=1)]
    append(p)
    assert [(e.filter, e.data, e.udata) for e in kq.control(None, 4, 0.5)] == [(kqrs.KQ_FILTER_READ, 4, 7)]


@pytest.mark.xfail(
    strict=True,
    reason="Linux cannot say it: a read at the end of the file returns 0 bytes and "
    "Linux reports IN_ACCESS only for a read that read something; FreeBSD's "
    "vop_read_post posts NOTE_READ for every successful VOP_READ",
)
def test_read_at_end_of_file_is_read(kq, f):
    p, fd = f
    watch(kq, fd, NOTE_READ)
    with open(p, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        assert fh.read() == b""
    assert events(kq) == [ev(fd, NOTE_READ)]


# ---- inotify limits --------------------------------------------------------------------------------


class Sysctl:
    def __init__(self, name):
        self.path = f"/proc/sys/fs/inotify/{name}"

    def __enter__(self):
        try:
            with open(self.path) as fh:
                self.saved = fh.read().strip()
            with open(self.path, "w") as fh:
                fh.write(self.saved)
        except OSError as e:
            pytest.skip(f"{self.path} is not writable: {e}")
        return self

    def set(self, value):
        with open(self.path, "w") as fh:
            fh.write(str(value))

    def __exit__(self, *exc):
        with open(self.path, "w") as fh:
            fh.write(self.saved)


@pytest.mark.thread_unsafe
def test_out_of_inotify_watches_is_enospc(kq, f, tmp_path, fds):
    p, fd = f
    g = tmp_path / "g"
    g.write_bytes(b"")
    gfd = fds(g)
    watch(kq, fd)  # the inotify instance exists already
    with Sysctl("max_user_watches") as s:
        s.set(1)  # fewer than root has already: no new watch anywhere (restored at once)
        err = errno_of(kq, vnode(gfd))
        with pytest.raises(OSError) as e:
            kq.control([vnode(gfd)], 0)
    assert err == errno.ENOSPC
    assert e.value.errno == errno.ENOSPC
    assert kq._stats()[0] == 1  # nothing half-made
    watch(kq, gfd)  # fine again with the limit back
    append(g)
    assert events(kq) == [ev(gfd, NOTE_WRITE | NOTE_EXTEND)]


@pytest.mark.thread_unsafe
def test_queue_overflow_still_reports_what_changed(tmp_path, fds):
    """inotify drops events once its queue is full (IN_Q_OVERFLOW): kqrs re-reads every watched file.
    The chmod comes after the overflow, so only the snapshot can tell."""
    d = tmp_path / "d"
    d.mkdir()
    dfd = fds(d, os.O_RDONLY | os.O_DIRECTORY)
    with Sysctl("max_queued_events") as s:
        s.set(16)  # read when an inotify instance is made (restored at once)
        kq = kqrs.kqueue()
        watch(kq, dfd)
    try:
        for i in range(64):
            (d / f"e{i}").write_bytes(b"")  # distinct names: not merged, the queue overflows
        os.chmod(d, 0o700)
        [(_, _, _, notes, _, _)] = events(kq)
        assert {"WRITE", "ATTRIB"} <= set(notes.split("|")), notes
    finally:
        kq.close()
