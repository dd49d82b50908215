/* The C-variadic exec functions, which stable Rust cannot define. glibc's own execl* call its
 * internal execve, never the interposed one, so a scrubbed environment or an unguardable
 * program would get through. Each shim only gathers its arguments into an argv array and
 * calls execve/execvpe, which resolve to the guard's hooks. No heap: this runs in vfork
 * children. Up to 256 arguments live on the stack; more go into an anonymous mapping. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

#define STACK_ARGS 256

static int exec_list(int search, const char *file, const char *arg0, va_list ap, int with_env) {
    size_t n = 0;
    if (arg0 != NULL) {
        va_list count;
        va_copy(count, ap);
        n = 1;
        while (va_arg(count, const char *) != NULL)
            n++;
        va_end(count);
    }
    char *on_stack[STACK_ARGS];
    char **argv = on_stack;
    size_t mapped = 0;
    if (n + 1 > STACK_ARGS) {
        mapped = (n + 1) * sizeof(char *);
        argv = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (argv == MAP_FAILED) {
            errno = ENOMEM;
            return -1;
        }
    }
    argv[0] = (char *)arg0;
    for (size_t i = 1; i < n; i++)
        argv[i] = va_arg(ap, char *);
    argv[n] = NULL;
    if (arg0 != NULL)
        (void)va_arg(ap, char *); /* the list's terminating NULL */
    char *const *envp = with_env ? va_arg(ap, char *const *) : environ;
    int rc = search ? execvpe(file, argv, envp) : execve(file, argv, envp);
    if (mapped) {
        int saved = errno;
        munmap(argv, mapped);
        errno = saved;
    }
    return rc;
}

int execl(const char *path, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(0, path, arg, ap, 0);
    va_end(ap);
    return rc;
}

int execlp(const char *file, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(1, file, arg, ap, 0);
    va_end(ap);
    return rc;
}

int execle(const char *path, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int rc = exec_list(0, path, arg, ap, 1);
    va_end(ap);
    return rc;
}
