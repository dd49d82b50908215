/* Old glibc interfaces that reach the network past the usual entry points:
 *   old_interfaces alias IP PORT   -> __connect (glibc's public alias): "ok" | "errno E"
 *   old_interfaces rcmd HOST       -> rcmd to HOST:514:   "rc R errno E"
 *   old_interfaces rexec HOST      -> rexec to HOST:512:  "rc R errno E"
 *   old_interfaces ruserok HOST    -> ruserok(HOST, ...): "rc R"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern int __connect(int, const struct sockaddr *, socklen_t);

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (!strcmp(argv[1], "alias") && argc == 4) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons(atoi(argv[3]));
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (__connect(s, (struct sockaddr *)&a, sizeof a) == 0) printf("ok\n"); else printf("errno %d\n", errno);
        return 0;
    }
    char *host = argv[2];
    int rc;
    errno = 0;
    if (!strcmp(argv[1], "rcmd")) rc = rcmd(&host, htons(514), "root", "root", "true", NULL);
    else if (!strcmp(argv[1], "rexec")) rc = rexec(&host, htons(512), "user", "password", "true", NULL);
    else if (!strcmp(argv[1], "ruserok")) { rc = ruserok(host, 0, "user", "user"); printf("rc %d\n", rc); return 0; }
    else return 2;
    printf("rc %d errno %d\n", rc, rc < 0 ? errno : 0);
    return 0;
}
