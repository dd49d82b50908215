/* fwd_shim.so: a forwarding-only LD_PRELOAD shim, the floor for any interposer.
 *
 * It interposes the same libc entry points as libegress_preload.so (connect, the sends, the
 * lookups, the exec and spawn families, system/popen, dlopen, syscall, and socket/close/dup*) and does nothing but
 * call the next definition (dlsym(RTLD_NEXT), looked up on first use and cached). Whatever it
 * costs a program is the price of being an interposer at all: loading one more small library
 * at every exec, and one indirect call per intercepted function. The benchmark compares the
 * guard with it.
 *
 * Built by scripts/bench.sh: gcc -shared -fPIC -O2 (not a workload: no main). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

/* The next definition of FN (its prototype comes from the libc headers), or NULL. Benign race:
 * two threads may both look it up and store the same pointer. */
#define NEXT(fn)                                                                   \
    ({                                                                             \
        static __typeof__(&fn) next_##fn;                                          \
        __typeof__(&fn) f_ = __atomic_load_n(&next_##fn, __ATOMIC_RELAXED);        \
        if (!f_) {                                                                 \
            f_ = (__typeof__(&fn))dlsym(RTLD_NEXT, #fn);                           \
            __atomic_store_n(&next_##fn, f_, __ATOMIC_RELAXED);                    \
        }                                                                          \
        f_;                                                                        \
    })

/* Forward, or fail like a missing function would. */
#define FORWARD(fn, fail, ...)                                                     \
    do {                                                                           \
        __typeof__(&fn) f = NEXT(fn);                                              \
        if (!f) {                                                                  \
            errno = ENOSYS;                                                        \
            return fail;                                                           \
        }                                                                          \
        return f(__VA_ARGS__);                                                     \
    } while (0)

/* ---- sockets ---- */

/* Descriptor bookkeeping the guard hooks too (its socket-kind table). */
int socket(int domain, int type, int protocol)
{
    FORWARD(socket, -1, domain, type, protocol);
}

int close(int fd)
{
    FORWARD(close, -1, fd);
}

int dup(int fd)
{
    FORWARD(dup, -1, fd);
}

int dup2(int fd, int to)
{
    FORWARD(dup2, -1, fd, to);
}

int dup3(int fd, int to, int flags)
{
    FORWARD(dup3, -1, fd, to, flags);
}

int close_range(unsigned int first, unsigned int last, int flags)
{
    FORWARD(close_range, -1, first, last, flags);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    FORWARD(connect, -1, fd, addr, len);
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    FORWARD(send, -1, fd, buf, n, flags);
}

ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *addr,
               socklen_t len)
{
    FORWARD(sendto, -1, fd, buf, n, flags, addr, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    FORWARD(sendmsg, -1, fd, msg, flags);
}

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    FORWARD(sendmmsg, -1, fd, vec, vlen, flags);
}

/* ---- name lookups ---- */

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    FORWARD(getaddrinfo, EAI_SYSTEM, node, service, hints, res);
}

int getaddrinfo_a(int mode, struct gaicb *list[], int n, struct sigevent *sev)
{
    FORWARD(getaddrinfo_a, EAI_SYSTEM, mode, list, n, sev);
}

int getnameinfo(const struct sockaddr *addr, socklen_t len, char *host, socklen_t hostlen,
                char *serv, socklen_t servlen, int flags)
{
    FORWARD(getnameinfo, EAI_SYSTEM, addr, len, host, hostlen, serv, servlen, flags);
}

struct hostent *gethostbyname(const char *name)
{
    FORWARD(gethostbyname, NULL, name);
}

struct hostent *gethostbyname2(const char *name, int af)
{
    FORWARD(gethostbyname2, NULL, name, af);
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                    struct hostent **result, int *h_errnop)
{
    FORWARD(gethostbyname_r, ENOSYS, name, ret, buf, buflen, result, h_errnop);
}

int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                     struct hostent **result, int *h_errnop)
{
    FORWARD(gethostbyname2_r, ENOSYS, name, af, ret, buf, buflen, result, h_errnop);
}

struct hostent *gethostbyaddr(const void *addr, socklen_t len, int type)
{
    FORWARD(gethostbyaddr, NULL, addr, len, type);
}

int gethostbyaddr_r(const void *addr, socklen_t len, int type, struct hostent *ret, char *buf,
                    size_t buflen, struct hostent **result, int *h_errnop)
{
    FORWARD(gethostbyaddr_r, ENOSYS, addr, len, type, ret, buf, buflen, result, h_errnop);
}

/* The res_* family, under both names (<resolv.h> renames res_query to __res_query, and so on;
 * it is not included here so that both can be defined). res_state is passed through as is. */
#define RES_FWD(fn, params, args) \
    int fn params { FORWARD(fn, -1, args); }
#define Q (const char *name, int class_, int type, unsigned char *answer, int anslen)
#define QA name, class_, type, answer, anslen
#define NQ (void *st, const char *name, int class_, int type, unsigned char *answer, int anslen)
#define NQA st, name, class_, type, answer, anslen
#define QD (const char *name, const char *domain, int class_, int type, unsigned char *answer, \
            int anslen)
#define QDA name, domain, class_, type, answer, anslen
#define NQD (void *st, const char *name, const char *domain, int class_, int type,            \
             unsigned char *answer, int anslen)
#define NQDA st, name, domain, class_, type, answer, anslen
#define S (const unsigned char *msg, int msglen, unsigned char *answer, int anslen)
#define SA msg, msglen, answer, anslen
#define NS (void *st, const unsigned char *msg, int msglen, unsigned char *answer, int anslen)
#define NSA st, msg, msglen, answer, anslen
int res_query Q, __res_query Q, res_search Q, __res_search Q;
int res_nquery NQ, __res_nquery NQ, res_nsearch NQ, __res_nsearch NQ;
int res_querydomain QD, __res_querydomain QD, res_nquerydomain NQD, __res_nquerydomain NQD;
int res_send S, __res_send S, res_nsend NS, __res_nsend NS;
RES_FWD(res_query, Q, QA)
RES_FWD(__res_query, Q, QA)
RES_FWD(res_search, Q, QA)
RES_FWD(__res_search, Q, QA)
RES_FWD(res_nquery, NQ, NQA)
RES_FWD(__res_nquery, NQ, NQA)
RES_FWD(res_nsearch, NQ, NQA)
RES_FWD(__res_nsearch, NQ, NQA)
RES_FWD(res_querydomain, QD, QDA)
RES_FWD(__res_querydomain, QD, QDA)
RES_FWD(res_nquerydomain, NQD, NQDA)
RES_FWD(__res_nquerydomain, NQD, NQDA)
RES_FWD(res_send, S, SA)
RES_FWD(__res_send, S, SA)
RES_FWD(res_nsend, NS, NSA)
RES_FWD(__res_nsend, NS, NSA)

/* ---- exec, spawn, shells ---- */

int execve(const char *path, char *const argv[], char *const envp[])
{
    FORWARD(execve, -1, path, argv, envp);
}

int execv(const char *path, char *const argv[])
{
    FORWARD(execv, -1, path, argv);
}

int execvp(const char *file, char *const argv[])
{
    FORWARD(execvp, -1, file, argv);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    FORWARD(execvpe, -1, file, argv, envp);
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    FORWARD(execveat, -1, dirfd, path, argv, envp, flags);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    FORWARD(fexecve, -1, fd, argv, envp);
}

/* The variadic execl* forward to their array forms, as glibc's own do. */
#define COLLECT_ARGV(first, ap, argv)                                              \
    size_t argc_ = 1;                                                              \
    va_start(ap, first);                                                           \
    while (va_arg(ap, char *))                                                     \
        argc_++;                                                                   \
    va_end(ap);                                                                    \
    char *argv[argc_ + 1];                                                         \
    argv[0] = (char *)first;                                                       \
    va_start(ap, first);                                                           \
    for (size_t i_ = 1; i_ <= argc_; i_++)                                         \
        argv[i_] = va_arg(ap, char *);

int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGV(arg, ap, argv);
    va_end(ap);
    FORWARD(execv, -1, path, argv);
}

int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGV(arg, ap, argv);
    va_end(ap);
    FORWARD(execvp, -1, file, argv);
}

int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    COLLECT_ARGV(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *); /* after the NULL that ends argv */
    va_end(ap);
    FORWARD(execve, -1, path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    FORWARD(posix_spawn, ENOSYS, pid, path, actions, attr, argv, envp);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    FORWARD(posix_spawnp, ENOSYS, pid, file, actions, attr, argv, envp);
}

int system(const char *command)
{
    FORWARD(system, -1, command);
}

FILE *popen(const char *command, const char *type)
{
    FORWARD(popen, NULL, command, type);
}

/* dlopen decides $ORIGIN and the namespace from its caller's address: the forward must be a
 * tail call (gcc -O2 makes it one) so that the real dlopen sees the program as its caller. */
void *dlopen(const char *file, int flags)
{
    FORWARD(dlopen, NULL, file, flags);
}

/* syscall(2) is variadic; like every wrapper of it, pass six argument registers through. */
long syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    FORWARD(syscall, -1, nr, a1, a2, a3, a4, a5, a6);
}
