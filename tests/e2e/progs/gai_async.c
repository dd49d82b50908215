/* getaddrinfo_a(GAI_WAIT) of NAME: prints "ok ADDR", "fail rc=R errno=E" or "req rc=R". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    struct gaicb req = {.ar_name = argv[1], .ar_request = &hints};
    struct gaicb *list[1] = {&req};
    errno = 0;
    int rc = getaddrinfo_a(GAI_WAIT, list, 1, NULL);
    if (rc != 0) { printf("fail rc=%d errno=%d\n", rc, errno); return 0; }
    int r = gai_error(&req);
    if (r != 0 || !req.ar_result) { printf("req rc=%d\n", r); return 0; }
    char buf[64];
    inet_ntop(AF_INET, &((struct sockaddr_in *)req.ar_result->ai_addr)->sin_addr, buf, sizeof buf);
    printf("ok %s\n", buf);
    return 0;
}
