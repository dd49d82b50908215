/* Loads a second libc in a new link-map namespace (dlmopen(LM_ID_NEWLM)), where no preload
 * is, and connects with its connect:
 *   dlmopen_connect IP PORT  -> "dlmopen failed: MSG" | "ok" | "errno E"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    void *h = dlmopen(LM_ID_NEWLM, "libc.so.6", RTLD_NOW);
    if (!h) {
        const char *e = dlerror();
        printf("dlmopen failed: %s\n", e ? e : "(no message)");
        return 1;
    }
    int (*conn)(int, const struct sockaddr *, socklen_t) = dlsym(h, "connect");
    int (*sock)(int, int, int) = dlsym(h, "socket");
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int s = sock(AF_INET, SOCK_STREAM, 0);
    if (conn(s, (struct sockaddr *)&a, sizeof a) == 0) printf("ok\n"); else printf("errno %d\n", errno);
    return 0;
}
