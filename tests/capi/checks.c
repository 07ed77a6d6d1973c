/*
 * Behaviours of kqrs's C library (libkqueue.so.0) that libkqueue gets wrong or that its own suite does not
 * check, one per name: `checks NAME` exits 0 when the behaviour holds, else prints why and exits 1.
 * tests/test_capi.py builds this against the installed library and runs every check.
 */
#define _GNU_SOURCE
#include <sys/event.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno)); exit(1); } while (0)
#define CHECK(cond, ...) do { if (!(cond)) FAIL(__VA_ARGS__); } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void add(int kq, uintptr_t ident, short filter, unsigned short flags, unsigned fflags, intptr_t data) {
    struct kevent kev;
    EV_SET(&kev, ident, filter, flags, fflags, data, NULL);
    CHECK(kevent(kq, &kev, 1, NULL, 0, NULL) == 0, "kevent(add ident=%lu filter=%d)", (unsigned long) ident, filter);
}

static int wait_one(int kq, struct kevent *out, double seconds) {
    struct timespec ts = { (time_t) seconds, (long) ((seconds - (time_t) seconds) * 1e9) };
    return kevent(kq, NULL, 0, out, 1, &ts);
}

/* The kqueue fd is an epoll fd: poll() says readable while an event is pending, and not after. */
static void check_pollable(void) {
    int kq = kqueue();
    struct pollfd p = { kq, POLLIN, 0 };
    CHECK(poll(&p, 1, 0) == 0, "readable with nothing pending");
    add(kq, 1, EVFILT_USER, EV_ADD | EV_CLEAR, NOTE_TRIGGER, 0);
    CHECK(poll(&p, 1, 1000) == 1 && (p.revents & POLLIN), "not readable with an event pending");
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 0) == 1 && ev.ident == 1, "the event");
    CHECK(poll(&p, 1, 0) == 0, "still readable once the event was taken");
    close(kq);
}

/* A kqueue watched by another through EVFILT_READ: data is how many events are pending. */
static void check_nested(void) {
    int outer = kqueue(), inner = kqueue();
    add(outer, inner, EVFILT_READ, EV_ADD, 0, 0);
    struct kevent ev;
    CHECK(wait_one(outer, &ev, 0) == 0, "inner kqueue reported readable while empty");
    add(inner, 7, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0);
    CHECK(wait_one(outer, &ev, 2) == 1 && (int) ev.ident == inner && ev.filter == EVFILT_READ, "no event for the inner kqueue");
    CHECK(ev.data == 1, "inner kqueue's data %ld, want 1 event pending", (long) ev.data);
    add(inner, 8, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0);
    CHECK(wait_one(outer, &ev, 2) == 1 && ev.data == 2, "inner kqueue's data %ld, want 2 events pending", (long) ev.data);
    struct kevent evs[4];
    CHECK(kevent(inner, NULL, 0, evs, 4, &(struct timespec){0, 0}) == 2 && evs[0].ident == 7, "inner events");
    close(inner);
    close(outer);
}

static void *trigger_later(void *arg) {
    usleep(300 * 1000);
    add(*(int *) arg, 9, EVFILT_USER, 0, NOTE_TRIGGER, 0);
    return NULL;
}

/* kevent() returns only when something happened or the whole timeout passed (libkqueue returns 0 early). */
static void check_no_early_return(void) {
    int kq = kqueue();
    struct kevent ev;
    double t0 = now();
    CHECK(wait_one(kq, &ev, 0.2) == 0, "an event from an empty kqueue");
    CHECK(now() - t0 >= 0.2, "returned after %.3f s of a 0.2 s timeout", now() - t0);
    add(kq, 9, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, trigger_later, &kq);
    t0 = now();
    CHECK(kevent(kq, NULL, 0, &ev, 1, NULL) == 1 && ev.ident == 9, "no timeout: wrong result");
    CHECK(now() - t0 >= 0.25, "no timeout: returned after %.3f s, before the trigger", now() - t0);
    pthread_join(th, NULL);
    close(kq);
}

/* A process that is not our child: NOTE_EXIT with its wait status, no waitpid needed, no CPU burnt. */
static void check_proc_not_a_child(void) {
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t mid = fork();
    if (mid == 0) {
        pid_t g = fork();
        if (g == 0) {
            close(fds[0]);
            close(fds[1]);
            pause();
            _exit(0);
        }
        write(fds[1], &g, sizeof g);
        _exit(0);
    }
    pid_t g;
    CHECK(read(fds[0], &g, sizeof g) == sizeof g, "grandchild pid");
    waitpid(mid, NULL, 0);
    int kq = kqueue();
    add(kq, g, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0);
    struct kevent ev;
    clock_t c0 = clock();
    CHECK(wait_one(kq, &ev, 0.3) == 0, "an event before the process exited");
    CHECK((double) (clock() - c0) / CLOCKS_PER_SEC < 0.1, "CPU burnt while waiting for a non-child");
    kill(g, SIGTERM);
    CHECK(wait_one(kq, &ev, 5) == 1, "no NOTE_EXIT for a process that is not our child");
    CHECK(ev.ident == (uintptr_t) g && (ev.fflags & NOTE_EXIT) && (ev.flags & EV_EOF), "wrong event");
    CHECK(WIFSIGNALED(ev.data) && WTERMSIG(ev.data) == SIGTERM, "data %ld is not its wait status", (long) ev.data);
    close(kq);
}

/* NOTE_FORK and NOTE_EXEC on a child, then NOTE_EXIT. */
static void check_proc_fork_exec(void) {
    int go[2];
    CHECK(pipe(go) == 0, "pipe");
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        read(go[0], &c, 1);
        if (fork() == 0)
            _exit(0);
        execl("/bin/true", "true", (char *) NULL);
        _exit(127);
    }
    int kq = kqueue();
    add(kq, pid, EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_FORK | NOTE_EXEC, 0);
    write(go[1], "x", 1);
    unsigned seen = 0;
    struct kevent ev;
    while (!(seen & NOTE_EXIT)) {
        CHECK(wait_one(kq, &ev, 5) == 1, "missing events (seen %#x)", seen);
        seen |= ev.fflags;
    }
    CHECK((seen & (NOTE_FORK | NOTE_EXEC)) == (NOTE_FORK | NOTE_EXEC), "fflags seen %#x", seen);
    CHECK(WIFEXITED(ev.data) && WEXITSTATUS(ev.data) == 0, "exit status");
    close(kq);
}

static volatile sig_atomic_t handled;
static void on_usr1(int sig) { (void) sig; handled++; }

/* EVFILT_SIGNAL counts a signal and the application's own handler still runs (libkqueue swallows it). */
static void check_signal_handler_still_runs(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    int kq = kqueue();
    add(kq, SIGUSR1, EVFILT_SIGNAL, EV_ADD, 0, 0);
    raise(SIGUSR1);
    raise(SIGUSR1);
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 2) == 1 && ev.ident == SIGUSR1 && ev.data == 2, "signal event (data %ld)", (long) ev.data);
    CHECK(handled == 2, "the application's handler ran %d times, not 2", (int) handled);
    close(kq);
    raise(SIGUSR1); /* the handler is back alone */
    CHECK(handled == 3, "handler after close");
}

/* A kqueue closed with plain close(2) gives its descriptors back: 300 kqueues with a timer under a limit of
 * 64 descriptors. */
static void check_close_gives_fds_back(void) {
    struct rlimit rl = { 64, 64 };
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit");
    for (int i = 0; i < 300; i++) {
        int kq = kqueue();
        CHECK(kq >= 0, "kqueue() number %d", i);
        add(kq, 1, EVFILT_TIMER, EV_ADD, 0, 1000);
        close(kq);
    }
}

/* A kqueue is not inherited: in a fork child every call on it fails with EBADF; the parent's works. */
static void check_fork_child(void) {
    int kq = kqueue();
    add(kq, 1, EVFILT_USER, EV_ADD, 0, 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct kevent ev;
        int r = kevent(kq, NULL, 0, &ev, 1, &(struct timespec){ 0, 0 });
        _exit(r == -1 && errno == EBADF ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child could use the parent's kqueue");
    add(kq, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0);
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 1) == 1 && ev.ident == 1, "the parent's kqueue after fork");
    close(kq);
}

static volatile int stop_spinning;

static void *spin_changes(void *arg) {
    struct kevent ch;
    EV_SET(&ch, 5, EVFILT_USER, EV_ADD, 0, 0, NULL);
    while (!stop_spinning)
        kevent(*(int *) arg, &ch, 1, NULL, 0, NULL);
    return NULL;
}

/* A fork child's call on its parent's kqueue fails with EBADF at once, also when another thread of the parent
 * was inside that kqueue (holding its lock) at fork time, and when the forking thread used it last. */
static void check_fork_child_busy_parent(void) {
    int kq = kqueue();
    add(kq, 1, EVFILT_USER, EV_ADD, 0, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, spin_changes, &kq) == 0, "pthread_create");
    for (int i = 0; i < 200; i++) {
        add(kq, 1, EVFILT_USER, EV_ADD, 0, 0); /* the kqueue this thread used last */
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            alarm(5);
            struct kevent ch;
            EV_SET(&ch, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
            _exit(kevent(kq, &ch, 1, NULL, 0, NULL) == -1 && errno == EBADF ? 0 : 1);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d: the child %s", i,
              WIFSIGNALED(status) ? "hung (killed by its alarm)" : "did not fail with EBADF");
    }
    stop_spinning = 1;
    pthread_join(t, NULL);
    close(kq);
}

/* Bad pointers and counts fail with an errno; the kqueue is unharmed. */
static void check_bad_input(void) {
    int kq = kqueue();
    struct kevent ev;
    errno = 0;
    CHECK(kevent(kq, (struct kevent *) 8, 1, NULL, 0, NULL) == -1 && errno == EFAULT, "bad changelist");
    add(kq, 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0);
    CHECK(kevent(kq, NULL, 0, (struct kevent *) 8, 1, NULL) == -1 && errno == EFAULT, "bad eventlist");
    CHECK(kevent(kq, NULL, -1, &ev, 1, NULL) == -1 && errno == EINVAL, "negative nchanges");
    CHECK(kevent(kq, NULL, 0, &ev, 1, (struct timespec *) 8) == -1 && errno == EFAULT, "bad timeout");
    CHECK(kevent(kq, NULL, 0, &ev, 1, &(struct timespec){ 0, 2000000000L }) == -1 && errno == EINVAL, "bad tv_nsec");
    CHECK(kevent(-1, NULL, 0, &ev, 1, NULL) == -1 && errno == EBADF, "fd -1");
    CHECK(wait_one(kq, &ev, 1) == 1 && ev.ident == 1, "the event survives bad calls");
    /* Filters kqrs does not implement fail loudly, never silently. */
    struct kevent ch[2], out[2];
    EV_SET(&ch[0], 1, -3 /* EVFILT_AIO */, EV_ADD, 0, 0, NULL);
    EV_SET(&ch[1], 1, -99, EV_ADD, 0, 0, NULL);
    CHECK(kevent(kq, ch, 2, out, 2, NULL) == 2, "error entries");
    CHECK((out[0].flags & EV_ERROR) && out[0].data != 0, "EVFILT_AIO accepted");
    CHECK((out[1].flags & EV_ERROR) && out[1].data == EINVAL, "unknown filter: %ld", (long) out[1].data);
    close(kq);
}

/* A loop that hands kevent() the same changelist, timeout and eventlist every call has the kernel check them
 * (process_vm_readv/writev, kqrs's way to EFAULT instead of a crash) once; later calls copy them directly. A
 * seccomp filter makes those syscalls fail after the first calls: the loop must not notice, and a new
 * buffer must (so the filter is known to bite). */
static void check_buffers_checked_once(void) {
    int kq = kqueue();
    struct kevent ch, ev;
    struct timespec zero = { 0, 0 };
    add(kq, 1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0);
    EV_SET(&ch, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
    CHECK(kevent(kq, &ch, 1, &ev, 1, &zero) == 1 && ev.ident == 1, "the first trigger");
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
    };
    struct sock_fprog prog = { sizeof code / sizeof code[0], code };
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS");
    CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0, "seccomp filter");
    for (int i = 0; i < 1000; i++) {
        CHECK(kevent(kq, &ch, 1, &ev, 1, &zero) == 1 && ev.ident == 1, "trigger %d: the buffers were checked again", i);
        CHECK(kevent(kq, NULL, 0, &ev, 1, &zero) == 0, "poll %d: the buffers were checked again", i);
    }
    struct kevent fresh[2];
    errno = 0;
    CHECK(kevent(kq, &ch, 1, &fresh[1], 1, &zero) == -1 && errno == ENOSYS, "a new eventlist was not checked");
    close(kq);
}

/* A kqueue closed with close(2) whose number the next kqueue() gets: calls on that number reach the new
 * kqueue, in the thread that used the old one (which remembers its last kqueue) as in another. */
static void *poll_reused(void *arg) {
    struct kevent ev;
    int n = kevent(*(int *) arg, NULL, 0, &ev, 1, &(struct timespec){ 0, 0 });
    return (void *) (intptr_t) (n == 1 && ev.ident == 2 ? 1 : 0);
}

static void check_reused_number(void) {
    int old = kqueue();
    add(old, 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0);
    struct kevent ev;
    CHECK(wait_one(old, &ev, 0) == 1 && ev.ident == 1, "the old kqueue's event");
    close(old);
    int kq = kqueue();
    CHECK(kq == old, "kqueue() did not reuse the number (%d, was %d)", kq, old);
    CHECK(wait_one(kq, &ev, 0) == 0, "the new kqueue reports the old one's event");
    add(kq, 2, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0);
    pthread_t t;
    void *ok = NULL;
    CHECK(pthread_create(&t, NULL, poll_reused, &kq) == 0 && pthread_join(t, &ok) == 0 && ok, "another thread");
    CHECK(wait_one(kq, &ev, 0) == 1 && ev.ident == 2, "this thread");
    close(kq);
}

static void *blocked_waiter(void *arg) {
    struct kevent ev;
    kevent(*(int *) arg, NULL, 0, &ev, 1, NULL);
    return (void *) 1;
}

/* pthread_cancel of a thread blocked in kevent(): it is a cancellation point, and the kqueue still works. */
static void check_cancel(void) {
    int kq = kqueue();
    add(kq, 1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0);
    pthread_t th;
    pthread_create(&th, NULL, blocked_waiter, &kq);
    usleep(100 * 1000);
    CHECK(pthread_cancel(th) == 0, "pthread_cancel");
    void *ret;
    CHECK(pthread_join(th, &ret) == 0 && ret == PTHREAD_CANCELED, "the waiter was not cancelled");
    add(kq, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0);
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 1) == 1 && ev.ident == 1, "the kqueue after a cancel");
    close(kq);
}

/* A listening socket's data is its accept queue (libkqueue: 1); a socket's write space is free space. */
static void check_sockets(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    CHECK(bind(l, (struct sockaddr *) &a, sizeof a) == 0 && listen(l, 8) == 0, "listen");
    getsockname(l, (struct sockaddr *) &a, &len);
    int c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(connect(c[i], (struct sockaddr *) &a, sizeof a) == 0, "connect");
    }
    int kq = kqueue();
    add(kq, l, EVFILT_READ, EV_ADD, 0, 0);
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 1) == 1 && ev.data == 3, "listen backlog %ld, not 3", (long) ev.data);
    add(kq, c[0], EVFILT_WRITE, EV_ADD, 0, 0);
    add(kq, l, EVFILT_READ, EV_DELETE, 0, 0);
    CHECK(wait_one(kq, &ev, 1) == 1 && (int) ev.ident == c[0] && ev.data > 1000, "write space %ld", (long) ev.data);
    close(kq);
}

/* A regular file stays readable whenever there is more to read, also after it grew past an EOF. */
static void check_regular_file(void) {
    char path[] = "/tmp/kqrs-capi-XXXXXX";
    int w = mkstemp(path);
    int r = open(path, O_RDONLY);
    unlink(path);
    int kq = kqueue();
    add(kq, r, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0);
    struct kevent ev;
    char buf[16];
    for (int round = 0; round < 3; round++) {
        CHECK(write(w, "hello", 5) == 5, "write");
        CHECK(wait_one(kq, &ev, 2) == 1 && ev.data == 5, "round %d: data %ld, not 5", round, (long) ev.data);
        CHECK(read(r, buf, sizeof buf) == 5, "read");
    }
    close(kq);
}

/* An fd closed behind the kqueue's back: nothing is reported for it, and its number can be added again. */
static void check_closed_fd(void) {
    int kq = kqueue(), p[2];
    CHECK(pipe(p) == 0, "pipe");
    add(kq, p[0], EVFILT_READ, EV_ADD, 0, 0);
    int n = p[0];
    close(p[0]);
    close(p[1]);
    struct kevent ev;
    CHECK(wait_one(kq, &ev, 0.1) == 0, "an event for a closed fd");
    CHECK(pipe(p) == 0 && p[0] == n, "fd number reuse");
    add(kq, p[0], EVFILT_READ, EV_ADD, 0, 0);
    CHECK(write(p[1], "x", 1) == 1, "write");
    CHECK(wait_one(kq, &ev, 1) == 1 && (int) ev.ident == n && ev.data == 1, "the new pipe's event");
    close(kq);
}

static const struct { const char *name; void (*fn)(void); } CHECKS[] = {
    { "pollable", check_pollable },
    { "nested", check_nested },
    { "no_early_return", check_no_early_return },
    { "proc_not_a_child", check_proc_not_a_child },
    { "proc_fork_exec", check_proc_fork_exec },
    { "signal_handler_still_runs", check_signal_handler_still_runs },
    { "close_gives_fds_back", check_close_gives_fds_back },
    { "fork_child", check_fork_child },
    { "fork_child_busy_parent", check_fork_child_busy_parent },
    { "bad_input", check_bad_input },
    { "buffers_checked_once", check_buffers_checked_once },
    { "reused_number", check_reused_number },
    { "cancel", check_cancel },
    { "sockets", check_sockets },
    { "regular_file", check_regular_file },
    { "closed_fd", check_closed_fd },
};

int main(int argc, char **argv) {
    for (size_t i = 0; i < sizeof CHECKS / sizeof CHECKS[0]; i++) {
        if (argc == 1) {
            puts(CHECKS[i].name);
        } else if (strcmp(argv[1], CHECKS[i].name) == 0) {
            CHECKS[i].fn();
            puts("ok");
            return 0;
        }
    }
    if (argc == 1)
        return 0;
    fprintf(stderr, "no check named %s\n", argv[1]);
    return 2;
}
