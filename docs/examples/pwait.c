/*
 * pwait: wait for processes to exit, as FreeBSD's pwait(1) does, with kqrs's C library.
 *
 *     pwait [-v] [-t SECONDS] PID...
 *
 * The processes need not be our children (EVFILT_PROC watches any process we may signal), and nothing is
 * polled: one kevent() call sleeps until the next exit. With -v each exit is printed as
 * "PID: exited with status N" or "PID: killed by signal N". Exits 0 once all are gone, 124 on timeout.
 *
 * Build:  cc -o pwait docs/examples/pwait.c $(pkg-config --cflags --libs libkqueue)
 */
#include <sys/event.h>
#include <sys/wait.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int verbose = 0, opt;
    double limit = -1;
    while ((opt = getopt(argc, argv, "vt:")) != -1) {
        if (opt == 'v') {
            verbose = 1;
        } else if (opt == 't') {
            limit = atof(optarg);
        } else {
            fprintf(stderr, "usage: pwait [-v] [-t SECONDS] PID...\n");
            return 2;
        }
    }
    int kq = kqueue();
    if (kq < 0) {
        perror("kqueue");
        return 1;
    }
    int left = 0;
    for (int i = optind; i < argc; i++) {
        struct kevent kev;
        pid_t pid = (pid_t) strtol(argv[i], NULL, 10);
        EV_SET(&kev, pid, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, NULL);
        if (kevent(kq, &kev, 1, NULL, 0, NULL) < 0) {
            /* ESRCH: gone already (or never there) */
            fprintf(stderr, "pwait: %s: %s\n", argv[i], strerror(errno));
            continue;
        }
        left++;
    }
    struct timespec ts, *timeout = NULL;
    if (limit >= 0) {
        ts.tv_sec = (time_t) limit;
        ts.tv_nsec = (long) ((limit - (double) ts.tv_sec) * 1e9);
        timeout = &ts;
    }
    while (left > 0) {
        struct kevent ev;
        int n = kevent(kq, NULL, 0, &ev, 1, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("kevent");
            return 1;
        }
        if (n == 0)
            return 124; /* a FreeBSD pwait -t runs out the whole time for the remaining processes */
        left--;
        if (verbose) {
            int status = (int) ev.data;
            if (WIFEXITED(status))
                printf("%lu: exited with status %d\n", (unsigned long) ev.ident, WEXITSTATUS(status));
            else
                printf("%lu: killed by signal %d\n", (unsigned long) ev.ident, WTERMSIG(status));
            fflush(stdout);
        }
    }
    return 0;
}
