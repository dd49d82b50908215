/* Daemonises, outliving COMMAND: `kl_daemon GO OUT IP PORT`. The parent exits at once; the
 * child leaves the session, closes its standard descriptors, waits until the file GO exists,
 * then connects to IP:PORT and writes "connect RESULT ERRNO" to OUT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    if (fork() != 0) return 0;
    setsid();
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0); dup2(null, 1); dup2(null, 2);
    struct stat st;
    for (int i = 0; i < 6000 && stat(argv[1], &st) != 0; i++) usleep(10000);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[4]));
    inet_pton(AF_INET, argv[3], &a.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    char line[64];
    int n = snprintf(line, sizeof line, "connect %d %d\n", r, r < 0 ? errno : 0);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write(fd, line, n);
    close(fd);
    return 0;
}
