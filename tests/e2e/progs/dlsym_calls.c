/* Finds libc's network functions through the dynamic loader, as FFI layers and plugins do,
 * and calls them:
 *   dlsym_calls HOW connect IP PORT         -> "ok" | "errno E"
 *   dlsym_calls HOW sendto IP PORT PAYLOAD  -> "sent N" | "errno E"
 *   dlsym_calls HOW getaddrinfo NAME        -> "ok" | "fail rc=R"
 * HOW: handle   dlsym(dlopen("libc.so.6"), name)
 *      vsym     dlvsym(dlopen("libc.so.6"), name, "GLIBC_2.2.5")
 *      default  dlsym(RTLD_DEFAULT, name)
 *      next     dlsym(RTLD_NEXT, name) called from a library loaded after the guard
 *               (libdlsym_next.so, which this program links: lookup_next())
 *      dlsymptr dlsym(handle, "dlsym") first, then that function for name
 *      direct   the function as the program links it (no look-up)
 *   dlsym_calls where NAME...  -> for each NAME, the file that defines what
 *                                dlsym(dlopen("libc.so.6"), NAME) returns
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void *lookup_next(const char *name);

static void *find(const char *how, const char *name) {
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!strcmp(how, "handle")) return dlsym(libc, name);
    if (!strcmp(how, "vsym")) return dlvsym(libc, name, "GLIBC_2.2.5");
    if (!strcmp(how, "default")) return dlsym(RTLD_DEFAULT, name);
    if (!strcmp(how, "next")) return lookup_next(name);
    if (!strcmp(how, "direct")) {
        if (!strcmp(name, "connect")) return (void *)connect;
        if (!strcmp(name, "sendto")) return (void *)sendto;
        if (!strcmp(name, "getaddrinfo")) return (void *)getaddrinfo;
    }
    if (!strcmp(how, "dlsymptr")) {
        void *(*sym)(void *, const char *) = (void *(*)(void *, const char *))dlsym(libc, "dlsym");
        return sym(libc, name);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "where")) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        for (int i = 2; i < argc; i++) {
            Dl_info info;
            void *f = dlsym(libc, argv[i]);
            const char *file = f && dladdr(f, &info) && info.dli_fname ? info.dli_fname : "-";
            const char *slash = strrchr(file, '/');
            printf("%s %s\n", argv[i], slash ? slash + 1 : file);
        }
        return 0;
    }
    if (argc < 4) return 2;
    void *f = find(argv[1], argv[2]);
    if (!f) { printf("lookup failed: %s\n", dlerror()); return 2; }
    if (!strcmp(argv[2], "connect") || !strcmp(argv[2], "sendto")) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[4]));
        inet_pton(AF_INET, argv[3], &a.sin_addr);
        if (!strcmp(argv[2], "connect")) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            int rc = ((int (*)(int, const struct sockaddr *, socklen_t))f)(s, (struct sockaddr *)&a, sizeof a);
            if (rc == 0) printf("ok\n"); else printf("errno %d\n", errno);
        } else {
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            const char *p = argc > 5 ? argv[5] : "x";
            ssize_t n = ((ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))f)(
                s, p, strlen(p), 0, (struct sockaddr *)&a, sizeof a);
            if (n >= 0) printf("sent %zd\n", n); else printf("errno %d\n", errno);
        }
        return 0;
    }
    if (!strcmp(argv[2], "getaddrinfo")) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int rc = ((int (*)(const char *, const char *, const struct addrinfo *, struct addrinfo **))f)(
            argv[3], NULL, &hints, &res);
        if (rc == 0) printf("ok\n"); else printf("fail rc=%d\n", rc);
        return 0;
    }
    return 2;
}
