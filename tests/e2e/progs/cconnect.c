/* cconnect: a Python C extension that connects from C, so no Python-level hook sees it.
 *
 *   import cconnect
 *   cconnect.connect("203.0.113.10", 5432)  -> 0 on success, else the errno of connect()
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static PyObject *cconnect_connect(PyObject *self, PyObject *args) {
    const char *addr;
    int port;
    if (!PyArg_ParseTuple(args, "si", &addr, &port))
        return NULL;
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
        PyErr_SetString(PyExc_ValueError, "not a numeric IPv4 address");
        return NULL;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    if (rc < 0)
        err = errno;
    close(fd);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(rc < 0 ? err : 0);
}

static PyMethodDef methods[] = {
    {"connect", cconnect_connect, METH_VARARGS, "connect(addr, port) -> 0 or errno"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "cconnect", NULL, -1, methods};

PyMODINIT_FUNC PyInit_cconnect(void) { return PyModule_Create(&module); }
