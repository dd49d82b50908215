/* Socket options that set a source route, from a static program: `kl_srcroute` prints
 * "lsrr RESULT ERRNO" (a loose source route through 192.0.2.1) and "nop RESULT ERRNO"
 * (options that route nowhere). Nothing is sent. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

int main(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char lsrr[8] = {1, 131, 7, 4, 192, 0, 2, 1};
    int r = setsockopt(s, IPPROTO_IP, IP_OPTIONS, lsrr, sizeof lsrr);
    printf("lsrr %d %d\n", r, r < 0 ? errno : 0);
    unsigned char nop[4] = {1, 1, 1, 0};
    r = setsockopt(s, IPPROTO_IP, IP_OPTIONS, nop, sizeof nop);
    printf("nop %d %d\n", r, r < 0 ? errno : 0);
    return 0;
}
