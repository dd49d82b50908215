/* A user's own LD_PRELOAD library that wraps connect and chains to the next definition,
 * the usual way (dlsym(RTLD_NEXT, ...)), or with USER_WRAP_VIA_HANDLE=1 through a libc handle.
 * Each wrapped IPv4/IPv6 connect writes "user_wrap: connect" to stderr (the guard's own
 * Unix-socket connect, which may pass through here too, is not counted). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*next)(int, const struct sockaddr *, socklen_t);
    if (!next) {
        const char *via = getenv("USER_WRAP_VIA_HANDLE");
        void *h = (via && *via == '1') ? dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD) : RTLD_NEXT;
        next = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(h, "connect");
    }
    static const char msg[] = "user_wrap: connect\n";
    if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
        write(2, msg, sizeof msg - 1);
    return next(fd, addr, len);
}
