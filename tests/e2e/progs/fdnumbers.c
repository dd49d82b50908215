/* Prints, as one JSON line, the number the first open() returns and which descriptors from 3 up
 * to 1100 were already open before it (a guarded process should see the native answer: 3, none
 * below the guard's own high numbers). */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(void) {
    int low = 0;
    for (int fd = 3; fd < 64; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            low++;
    int fd = open("/dev/null", O_RDONLY);
    printf("{\"first_open\": %d, \"open_below_64\": %d}\n", fd, low);
    return 0;
}
