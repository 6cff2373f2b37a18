/* SPDX-License-Identifier: MIT */
/*
 * main() for the plain (non-Criterion) build of a test file: see harness.h.
 *
 * Like Criterion, every test runs in a process of its own, so that no test sees what
 * an earlier one left behind (the default pool, the topology the library reads once,
 * environment variables). The parent spawns this same program (posix_spawn of
 * /proc/self/exe: exec, not a bare fork, so the child is a fresh single-threaded
 * process, as ThreadSanitizer wants) with the test's name, waits, and reports the
 * results as TAP on stdout (meson's protocol 'tap' counts them):
 *   exit 0 ok, exit 77 skipped (cr_skip_test; the reason is the child's last line
 *   on stdout), anything else failed.
 * With a name as argv[1] the program runs only that test, in-process.
 */
#define _GNU_SOURCE
#define WEFT_PLAIN_TESTS 1
#include "harness.h"

#include <errno.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct wt_test *wt_tests;
static struct wt_test **wt_tail = &wt_tests;

void wt_register(struct wt_test *t)
{
    *wt_tail = t; /* keep file order */
    wt_tail = &t->next;
}

/* Runs t in a child; returns its wait status, and its stdout (the skip reason). */
static int run_child(const char *self, struct wt_test *t, char *out, size_t outsz)
{
    int fds[2];
    out[0] = 0;
    if (pipe(fds) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    /* WT_RUNNER: a program that runs this one (qemu-user for a cross build, where
     * the host cannot exec the binary itself: tests/cross/aarch64.sh). */
    const char *runner = getenv("WT_RUNNER");
    char *argv[] = {(char *)self, (char *)t->name, NULL};
    char *rargv[] = {(char *)runner, (char *)self, (char *)t->name, NULL};
    pid_t pid;
    int err = runner && *runner
                  ? posix_spawnp(&pid, runner, &fa, NULL, rargv, environ)
                  : posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (err) {
        close(fds[0]);
        errno = err;
        return -1;
    }
    size_t len = 0;
    for (;;) {
        char buf[512];
        ssize_t r = read(fds[0], buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t k = 0; k < r && len + 1 < outsz; k++)
            out[len++] = buf[k];
    }
    out[len] = 0;
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return status;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1) {
        for (struct wt_test *t = wt_tests; t; t = t->next) {
            if (strcmp(argv[1], t->name) != 0)
                continue;
            fprintf(stderr, "[ RUN  ] %s::%s\n", t->suite, t->name);
            t->fn();
            fprintf(stderr, "[ PASS ] %s::%s\n", t->suite, t->name);
            return 0;
        }
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 2;
    }
    int n = 0;
    for (struct wt_test *t = wt_tests; t; t = t->next)
        n++;
    printf("TAP version 13\n1..%d\n", n);
    int k = 0, failed = 0, skipped = 0;
    for (struct wt_test *t = wt_tests; t; t = t->next) {
        char out[4096];
        fflush(stdout);
        int st = run_child(argv[0], t, out, sizeof(out));
        k++;
        if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            printf("ok %d - %s::%s\n", k, t->suite, t->name);
        } else if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 77) {
            char *nl = strrchr(out, '\n');
            if (nl && nl[1] == 0) {
                *nl = 0;
                nl = strrchr(out, '\n');
            }
            printf("ok %d - %s::%s # SKIP %s\n", k, t->suite, t->name, nl ? nl + 1 : out);
            skipped++;
        } else {
            if (st < 0)
                printf("not ok %d - %s::%s (could not run: %s)\n", k, t->suite, t->name,
                       strerror(errno));
            else if (WIFSIGNALED(st))
                printf("not ok %d - %s::%s (signal %d)\n", k, t->suite, t->name,
                       WTERMSIG(st));
            else
                printf("not ok %d - %s::%s (exit %d)\n", k, t->suite, t->name,
                       WEXITSTATUS(st));
            failed++;
        }
    }
    fprintf(stderr, "%d passed, %d skipped, %d failed\n", k - failed - skipped, skipped,
            failed);
    if (failed)
        return 1;
    return skipped == k ? 77 : 0;
}
