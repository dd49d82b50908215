/* Runs an action on a thread with a small stack, or in a signal handler on a small alternate
 * signal stack, and prints how it went:
 *   smallstack thread|altstack fork|spawn|system KIB -> "child status S" | "ret R"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static const char *action;
static char result[128];

static void act(void) {
    if (!strcmp(action, "fork")) {
        pid_t p = fork();
        if (p == 0) _exit(7);
        int st = 0;
        waitpid(p, &st, 0);
        snprintf(result, sizeof result, "child status %d", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    } else if (!strcmp(action, "spawn")) {
        pid_t p;
        char *argv[] = {"true", NULL};
        int rc = posix_spawnp(&p, "true", NULL, NULL, argv, environ);
        int st = 0;
        if (rc == 0) waitpid(p, &st, 0);
        snprintf(result, sizeof result, "ret %d status %d", rc, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    } else if (!strcmp(action, "system")) {
        int rc = system("exit 3");
        snprintf(result, sizeof result, "ret %d", WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
    }
}

static void *thread_main(void *arg) { (void)arg; act(); return NULL; }
static void handler(int sig) { (void)sig; act(); }

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    action = argv[2];
    size_t size = (size_t)atoi(argv[3]) * 1024;
    if (!strcmp(argv[1], "thread")) {
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, size < PTHREAD_STACK_MIN ? PTHREAD_STACK_MIN : size);
        pthread_t t;
        pthread_create(&t, &a, thread_main, NULL);
        pthread_join(t, NULL);
    } else {
        stack_t ss;
        ss.ss_sp = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ss.ss_size = size;
        ss.ss_flags = 0;
        sigaltstack(&ss, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = handler;
        sa.sa_flags = SA_ONSTACK;
        sigaction(SIGUSR1, &sa, NULL);
        raise(SIGUSR1);
    }
    printf("%s\n", result);
    return 0;
}
