/* lconnect PORT: connects to 127.0.0.1:PORT over TCP and prints "connect 0" or the errno.
 * Built plain, setuid and with -fsanitize=address by test_innocent_programs.py. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)atoi(argv[1]));
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char *heap = malloc(16); /* exercises the ASan allocator */
    strcpy(heap, "x");
    free(heap);
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    printf("connect %d\n", rc < 0 ? errno : 0);
    close(fd);
    return rc < 0;
}
