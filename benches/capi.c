/*
 * The C face against the raw syscalls, as a C program that links kqrs's libkqueue.so.0 in place of
 * libkqueue sees it: `capi OUT.json [--smoke]` (benches/run.sh builds the library and this program).
 *
 * Each pair is measured interleaved (a round of kevent(), a round of the raw calls, again and again), so
 * both sides see the same machine; every figure is the median over rounds of the time per call, in ns.
 * OUT.json has engine.json's shape (benches/report.py reads both).
 */
#define _GNU_SOURCE
#include <sys/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static int ROUNDS = 400, ITERS = 1000;

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- the measured calls (each returns 0 when it did what it should) ---- */

static int kq_empty, ep_empty, kq_ready, ep_ready, kq_user, ep_user, efd;
static const struct timespec ZERO = { 0, 0 };

static int kqrs_empty(void) {
    struct kevent ev;
    return kevent(kq_empty, NULL, 0, &ev, 1, &ZERO) != 0;
}

static int raw_empty(void) {
    struct epoll_event e;
    return epoll_wait(ep_empty, &e, 1, 0) != 0;
}

static int kqrs_ready(void) {
    struct kevent ev;
    return kevent(kq_ready, NULL, 0, &ev, 1, &ZERO) != 1 || ev.data != 1;
}

static int raw_ready(void) {
    struct epoll_event e;
    int n = 0;
    if (epoll_wait(ep_ready, &e, 1, 0) != 1)
        return 1;
    return ioctl(e.data.fd, FIONREAD, &n) != 0 || n != 1;
}

static int kqrs_user(void) {
    struct kevent ch, ev;
    EV_SET(&ch, 1, EVFILT_USER, 0, NOTE_TRIGGER, 0, NULL);
    return kevent(kq_user, &ch, 1, &ev, 1, &ZERO) != 1 || ev.ident != 1;
}

static int raw_user(void) {
    struct epoll_event e;
    uint64_t one = 1, got = 0;
    if (write(efd, &one, 8) != 8 || epoll_wait(ep_user, &e, 1, 0) != 1)
        return 1;
    return read(efd, &got, 8) != 8 || got != 1;
}

/* ---- pairs ---- */

static double timed(int (*f)(void)) {
    double t0 = now_ns();
    for (int i = 0; i < ITERS; i++)
        if (f())
            DIE("a measured call did not do what it should");
    return (now_ns() - t0) / ITERS;
}

static FILE *out;
static int rows;

static void pair(const char *key, const char *what, int (*k)(void), int (*r)(void), const char *base) {
    double *kv = malloc(ROUNDS * sizeof *kv), *rv = malloc(ROUNDS * sizeof *rv);
    if (!kv || !rv)
        DIE("malloc");
    timed(k), timed(r); /* warm-up */
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 2 == 0) {
            kv[i] = timed(k);
            rv[i] = timed(r);
        } else {
            rv[i] = timed(r);
            kv[i] = timed(k);
        }
    }
    double km = median(kv, ROUNDS), rm = median(rv, ROUNDS);
    printf("%-44s %9.1f ns %9.1f ns  %.3f  vs %s\n", what, km, rm, km / rm, base);
    fprintf(out, "%s  \"%s\": {\"kqrs_ns\": %.3f, \"base_ns\": %.3f, \"base\": \"%s\", \"what\": \"%s\"}",
            rows++ ? ",\n" : "", key, km, rm, base, what);
    free(kv);
    free(rv);
}

int main(int argc, char **argv) {
    if (argc < 2)
        DIE("usage: capi OUT.json [--smoke]");
    if (argc > 2 && strcmp(argv[2], "--smoke") == 0)
        ROUNDS = 3, ITERS = 10;
    out = fopen(argv[1], "w");
    if (!out)
        DIE("cannot write %s", argv[1]);
    fputs("{\n", out);

    struct kevent ch;
    kq_empty = kqueue();
    ep_empty = epoll_create1(EPOLL_CLOEXEC);
    if (kq_empty < 0 || ep_empty < 0)
        DIE("kqueue/epoll_create1");
    pair("capi.empty", "kevent(timeout 0), nothing ready", kqrs_empty, raw_empty, "epoll_wait(0)");

    int a[2], b[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, a) || socketpair(AF_UNIX, SOCK_STREAM, 0, b))
        DIE("socketpair");
    if (write(a[1], "x", 1) != 1 || write(b[1], "x", 1) != 1)
        DIE("write");
    kq_ready = kqueue();
    EV_SET(&ch, a[0], EVFILT_READ, EV_ADD, 0, 0, NULL);
    if (kevent(kq_ready, &ch, 1, NULL, 0, NULL) != 0)
        DIE("EV_ADD");
    ep_ready = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = { .events = EPOLLIN, .data.fd = b[0] };
    if (epoll_ctl(ep_ready, EPOLL_CTL_ADD, b[0], &e))
        DIE("epoll_ctl");
    pair("capi.one_ready_data", "kevent(timeout 0), one socket ready, data", kqrs_ready, raw_ready,
         "epoll_wait(0) + FIONREAD");

    kq_user = kqueue();
    EV_SET(&ch, 1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, NULL);
    if (kevent(kq_user, &ch, 1, NULL, 0, NULL) != 0)
        DIE("EV_ADD USER");
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ep_user = epoll_create1(EPOLL_CLOEXEC);
    e = (struct epoll_event){ .events = EPOLLIN, .data.fd = efd };
    if (efd < 0 || epoll_ctl(ep_user, EPOLL_CTL_ADD, efd, &e))
        DIE("eventfd");
    pair("capi.user", "EVFILT_USER trigger + retrieve, one kevent()", kqrs_user, raw_user,
         "eventfd write + epoll_wait + read");

    fputs("\n}\n", out);
    return fclose(out) != 0;
}
