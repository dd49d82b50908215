/* treeleaf: the leaf of a process tree in the egress-run end-to-end tests.
 *
 *   treeleaf PORT          one TCP connect to 127.0.0.1:PORT
 *
 * Prints one JSON line: {"leaf":"c","pid":P,"ppid":PP,"exe":"/proc/self/exe target","errno":E}
 * (errno 0: connected). Exits 0 whatever happened (2 on usage errors).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: treeleaf PORT\n");
        return 2;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)atoi(argv[1]));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket");
        return 2;
    }
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int err = rc == 0 ? 0 : errno;
    close(fd);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    printf("{\"leaf\":\"c\",\"pid\":%d,\"ppid\":%d,\"exe\":\"%s\",\"errno\":%d}\n", (int)getpid(),
           (int)getppid(), exe, err);
    fflush(stdout);
    return 0;
}
