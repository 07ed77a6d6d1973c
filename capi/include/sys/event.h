/*
 * <sys/event.h> for kqrs's C library (libkqueue.so.0 / libkqueue.a): BSD kqueue on Linux.
 *
 * Source-compatible with libkqueue's header on x86_64 Linux: the same struct kevent, the same EVFILT_*,
 * EV_* and NOTE_* values, EV_SET and LIBKQUEUE. As there, a filter is defined only if this library
 * implements it (`#ifdef EVFILT_VNODE` is a feature test). Names beyond libkqueue's are defined only where
 * their behaviour is what code written for FreeBSD expects of them (see each one).
 *
 * kqrs's own test (rust/tests/capi_header.rs) pins every value and the struct layout against the engine.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef _SYS_EVENT_H_
#define _SYS_EVENT_H_

#include <sys/types.h>
#include <stdint.h>

#define LIBKQUEUE 1
/** This header comes with kqrs (its version as 0xMMmmpp00, as EVFILT_LIBKQUEUE's NOTE_VERSION answers). */
#define KQRS_VERSION 0x00010000

struct timespec;

#define EV_SET(_kevp, _ident, _filter, _flags, _fflags, _data, _udata) do { \
    struct kevent *kevp = (_kevp);     \
    (kevp)->ident = (_ident);          \
    (kevp)->filter = (_filter);        \
    (kevp)->flags = (_flags);          \
    (kevp)->fflags = (_fflags);        \
    (kevp)->data = (_data);            \
    (kevp)->udata = (_udata);          \
} while(0)

/** One change or one event: 32 bytes on x86_64. */
struct kevent {
    uintptr_t       ident;      /**< identifier: an fd, a pid, a signal, any number (timers, user events) */
    short           filter;     /**< EVFILT_* */
    unsigned short  flags;      /**< EV_* */
    unsigned int    fflags;     /**< filter-specific flags (NOTE_*) */
    intptr_t        data;       /**< filter-specific data */
    void            *udata;     /**< opaque, handed back in every event */
};

/* Filters this library implements (AIO, NETDEV, FS and LIO are not: EV_ADD fails with EOPNOTSUPP). */
#define EVFILT_READ          (-1)
#define EVFILT_WRITE         (-2)
#define EVFILT_VNODE         (-4)
#define EVFILT_PROC          (-5)
#define EVFILT_SIGNAL        (-6)
#define EVFILT_TIMER         (-7)
#define EVFILT_USER          (-11)
#define EVFILT_LIBKQUEUE     (-12)     /**< libkqueue's: NOTE_VERSION, NOTE_VERSION_STR */
/** FreeBSD's process-descriptor filter: the ident is a pidfd (pidfd_open(2)); NOTE_EXIT with the wait
 *  status. FreeBSD's value (-8) is libkqueue's EVFILT_NETDEV: kqrs uses -13. */
#define EVFILT_PROCDESC      (-13)
#define EVFILT_SYSCOUNT      12

/* Actions */
#define EV_ADD          0x0001
#define EV_DELETE       0x0002
#define EV_ENABLE       0x0004
#define EV_DISABLE      0x0008

/* Flags */
#define EV_ONESHOT      0x0010
#define EV_CLEAR        0x0020
#define EV_RECEIPT      0x0040
#define EV_DISPATCH     0x0080
#define EV_SYSFLAGS     0xF000
#define EV_FLAG1        0x2000

/* Returned values */
#define EV_EOF          0x8000
#define EV_ERROR        0x4000

/* EVFILT_USER */
#define NOTE_FFNOP      0x00000000
#define NOTE_FFAND      0x40000000
#define NOTE_FFOR       0x80000000
#define NOTE_FFCOPY     0xc0000000
#define NOTE_FFCTRLMASK 0xc0000000
#define NOTE_FFLAGSMASK 0x00ffffff
#define NOTE_TRIGGER    0x01000000

/* EVFILT_READ, EVFILT_WRITE */
#define NOTE_LOWAT      0x0001

/* EVFILT_VNODE */
#define NOTE_DELETE     0x0001
#define NOTE_WRITE      0x0002
#define NOTE_EXTEND     0x0004
#define NOTE_ATTRIB     0x0008
#define NOTE_LINK       0x0010
#define NOTE_RENAME     0x0020
/** The file's filesystem was unmounted (EV_EOF set). libkqueue leaves it undefined on Linux; kqrs has it. */
#define NOTE_REVOKE     0x0040
#define NOTE_TRUNCATE   0x0080
/* FreeBSD's opt-in notes on using the file, reported only to a knote that asks for them (kqrs's: libkqueue
 * has none). NOTE_OPEN is 0x0800 here: FreeBSD's 0x0080 is libkqueue's NOTE_TRUNCATE. */
#define NOTE_CLOSE       0x0100
#define NOTE_CLOSE_WRITE 0x0200
#define NOTE_READ        0x0400
#define NOTE_OPEN        0x0800

/* EVFILT_PROC */
#define NOTE_EXIT       0x80000000
#define NOTE_FORK       0x40000000
#define NOTE_EXEC       0x20000000
#define NOTE_PCTRLMASK  0xf0000000
#define NOTE_PDATAMASK  0x000fffff
/** Follow the process's children: each gets a knote of its own, whose first event carries NOTE_CHILD with
 *  the parent's pid in data; NOTE_TRACKERR when one could not be attached. */
#define NOTE_TRACK      0x00000001
#define NOTE_TRACKERR   0x00000002
#define NOTE_CHILD      0x00000004

/* EVFILT_NETDEV (not implemented; the names are libkqueue's) */
#define NOTE_LINKUP     0x0001
#define NOTE_LINKDOWN   0x0002
#define NOTE_LINKINV    0x0004

/* vfsquery flags (libkqueue's header has them) */
#define VQ_NOTRESP      0x0001
#define VQ_NEEDAUTH     0x0002
#define VQ_LOWDISK      0x0004
#define VQ_MOUNT        0x0008
#define VQ_UNMOUNT      0x0010
#define VQ_DEAD         0x0020
#define VQ_ASSIST       0x0040
#define VQ_NOTRESPLOCK  0x0080

/* EVFILT_TIMER */
#define NOTE_SECONDS    0x0001
#define NOTE_USECONDS   0x0002
#define NOTE_NSECONDS   0x0004
#define NOTE_ABSOLUTE   0x0008

/* EVFILT_LIBKQUEUE: a change asks, and comes back as an entry with the answer */
#define NOTE_VERSION       0x0001      /**< data = version, 0xMMmmpp00 */
#define NOTE_VERSION_STR   0x0002      /**< udata = a static NUL-terminated string */
#define NOTE_THREAD_SAFE   0x0003      /**< libkqueue's setting: EINVAL here (kqrs is always thread safe) */
#define NOTE_FORK_CLEANUP  0x0004      /**< libkqueue's setting: EINVAL here (a kqueue is never inherited) */
#define NOTE_DEBUG         0x0005      /**< libkqueue's setting: EINVAL here */
#define NOTE_DEBUG_PREFIX  0x0006      /**< libkqueue's setting: EINVAL here */
#define NOTE_DEBUG_FUNC    0x0007      /**< libkqueue's setting: EINVAL here */
#define NOTE_FILE_POLL_INTERVAL 0x0008 /**< ENOSYS: regular files are re-armed by the kernel, never polled */

#ifdef __cplusplus
extern "C" {
#endif

int  kqueue(void);
int  kevent(int kq, const struct kevent *changelist, int nchanges,
            struct kevent *eventlist, int nevents, const struct timespec *timeout);
/** Frees now every kqueue whose fd was closed with close(2) (kqrs also does it on the next kqueue()). */
void libkqueue_drain_pending_close(void);

#ifdef __cplusplus
}
#endif

#endif /* !_SYS_EVENT_H_ */
