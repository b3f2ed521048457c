/* The stream transport's two per-message methods in C: write() and the
 * completion of its multishot receive (uringloop/_stream.py).
 *
 * What it owns: nothing.  stream_class(reference, receive_pool_field)
 * makes a subclass of ``reference`` (_stream.StreamPerMessage, the Python
 * implementation, which stays the reference) whose write and
 * _on_recv_multishot take the plain case without a Python frame and hand
 * every other case, untouched, to the reference method.  The transport's
 * state stays in the reference's __slots__ (and _FlowControlMixin's
 * _high_water), read here through their member descriptors, so Python
 * code and this file see the same attributes.
 *
 * Data flow:
 *   write(data): a non-empty bytes object, with no write_eof(), no
 *     sendfile, the connection not lost and the queue alive, goes straight
 *     into the send queue (ul_sendq_write, csrc/sendq.c); when the queue's
 *     answer is not plain (an error, more than the high-water mark queued,
 *     or a big write it sends from the object) the transport's
 *     _after_queued_write decides, as in the reference.
 *   _on_recv_multishot(res, flags): data (res > 0) from a receive that
 *     stays armed (IORING_CQE_F_MORE), with reading neither paused nor
 *     holding results, the transport open and a plain Protocol, is copied
 *     out of its provided buffer (the pool in ``_receive_pool``) into a
 *     bytes object for protocol.data_received; an exception from it goes
 *     to transport._fatal_error while it is the exception being handled,
 *     as the reference's ``except BaseException`` does.
 * Each check only reads, so a fallback runs the reference from the start.
 *
 * Module-level state, like the rest of _speedups: one reference class per
 * process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <linux/io_uring.h>
#include <stdint.h>
#include <string.h>

#include "speedups.h"

enum { F_PROTOCOL, F_CONN_LOST, F_CLOSING, F_PAUSED, F_HELD_RESULTS, F_BUFFERED, F_RECV_OP,
       F_EOF, F_EMPTY_WAITER, F_SENDQ, F_SENDQ_TARGET, F_RECEIVE_POOL, F_HIGH_WATER,
       FIELD_COUNT };

static const char *const field_names[FIELD_COUNT] = {
    "_protocol", "_conn_lost", "_closing", "_paused", "_held_results", "_buffered",
    "_recv_op", "_eof", "_empty_waiter", "_sendq", "_sendq_target", "_receive_pool",
    "_high_water",
};

static PyObject *stream_type;          /* the class stream_class made */
static struct ul_field_check plain_class;
static Py_ssize_t field_offset[FIELD_COUNT];
static PyObject *write_reference;      /* StreamPerMessage.write */
static PyObject *on_recv_reference;    /* StreamPerMessage._on_recv_multishot */
static PyObject *s_data_received, *s_fatal_error, *s_start_reading, *s_after_queued_write;
static PyObject *data_received_failed; /* the reference's message for _fatal_error */

/* self.<field> where fields_reached(self): borrowed, NULL when unset. */
static PyObject *
field_borrowed(PyObject *self, int which)
{
    return *(PyObject **)((char *)self + field_offset[which]);
}

/* Whether self's class reads the fields at their offsets: 1, 0, or -1 with
 * an error. */
static int
fields_reached(PyObject *self)
{
    return ul_fields_reach(&plain_class, Py_TYPE(self), stream_type, field_names, FIELD_COUNT);
}

/* self.<field>: a new reference, or NULL with asyncio's AttributeError. */
static PyObject *
field(PyObject *self, int which)
{
    PyObject *value = field_borrowed(self, which);
    return value != NULL ? Py_NewRef(value) : PyObject_GetAttrString(self, field_names[which]);
}

/* self.<field> is ``expected`` (None, True or False): 1 or 0; an unset
 * field is simply not (the reference will meet it). */
static int
field_is(PyObject *self, int which, PyObject *expected)
{
    return field_borrowed(self, which) == expected;
}

/* -- write ------------------------------------------------------------ */

/* The queue's answer ``size`` needs _after_queued_write when it is an
 * error, a big write the queue sends from the object (which must be kept,
 * whatever the mark), or above the high-water mark (compared as Python
 * compares it: the mark may be a float).  1, 0, or -1 with an error. */
static int
needs_after_write(PyObject *self, long long size)
{
    if (size < 0 || size >= UL_SENDQ_BY_REF)
        return 1;
    PyObject *high_water = field(self, F_HIGH_WATER);
    if (high_water == NULL)
        return -1;
    int over;
    int overflow = 0;
    long long mark = PyLong_CheckExact(high_water) ?
        PyLong_AsLongLongAndOverflow(high_water, &overflow) : -1;
    if (PyLong_CheckExact(high_water) && !overflow && !(mark == -1 && PyErr_Occurred())) {
        over = size > mark;
    } else {
        PyErr_Clear();
        PyObject *size_obj = PyLong_FromLongLong(size);
        over = size_obj == NULL ? -1 : PyObject_RichCompareBool(size_obj, high_water, Py_GT);
        Py_XDECREF(size_obj);
    }
    Py_DECREF(high_water);
    return over;
}

static PyObject *
stream_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int plain = fields_reached(self);
    if (plain < 0)
        return NULL;
    if (!plain || nargs != 1 || (kwnames != NULL && PyTuple_Size(kwnames) != 0))
        return ul_call_with_self(write_reference, self, args, nargs, kwnames);
    PyObject *data = args[0];
    Py_ssize_t length = PyBytes_CheckExact(data) ? PyBytes_Size(data) : 0;
    PyObject *target = NULL;
    if (length > 0 && ul_speedups_sendq_write != NULL &&
            field_is(self, F_EOF, Py_False) && field_is(self, F_EMPTY_WAITER, Py_None) &&
            field_is(self, F_CONN_LOST, Py_False) && !field_is(self, F_SENDQ, Py_None))
        target = field(self, F_SENDQ_TARGET);
    struct ul_sendq *queue = target != NULL && PyLong_CheckExact(target) ?
        PyLong_AsVoidPtr(target) : NULL;
    Py_XDECREF(target);
    if (queue == NULL) {
        PyErr_Clear();
        return PyObject_CallFunctionObjArgs(write_reference, self, data, NULL);
    }
    long long size = ul_speedups_sendq_write(queue, PyBytes_AsString(data), (size_t)length);
    int after = needs_after_write(self, size);
    if (after <= 0)
        return after < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *size_obj = PyLong_FromLongLong(size);
    if (size_obj == NULL)
        return NULL;
    PyObject *result = PyObject_CallMethodObjArgs(self, s_after_queued_write, data, size_obj,
                                                  NULL);
    Py_DECREF(size_obj);
    return result;
}

/* -- the multishot receive's completion -------------------------------- */

/* The bytes a receive left in provided buffer (flags >> shift) of the
 * pool ``pool`` = (base address, count, size): a new bytes object, or NULL
 * without an error when the pool does not hold them (the reference then
 * decides). */
static PyObject *
received_bytes(PyObject *pool, unsigned long flags, long nbytes)
{
    if (pool == NULL || !PyTuple_Check(pool) || PyTuple_Size(pool) != 3)
        return NULL;
    const char *base = PyLong_AsVoidPtr(PyTuple_GetItem(pool, 0));
    Py_ssize_t count = PyLong_AsSsize_t(PyTuple_GetItem(pool, 1));
    Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GetItem(pool, 2));
    Py_ssize_t buffer = (Py_ssize_t)(flags >> IORING_CQE_BUFFER_SHIFT);
    if (PyErr_Occurred() || base == NULL || buffer >= count || nbytes > size) {
        PyErr_Clear();
        return NULL;
    }
    return PyBytes_FromStringAndSize(base + buffer * size, nbytes);
}

/* ``except BaseException as exc: self._fatal_error(exc, message)`` for the
 * pending exception, SystemExit and KeyboardInterrupt re-raised first:
 * None, or NULL with an error. */
static PyObject *
data_received_error(PyObject *self)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
            PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return NULL;
    PyObject *exc = ul_take_exception();
    PyObject *fatal_error = PyObject_GetAttr(self, s_fatal_error);
    PyObject *reported = fatal_error == NULL ? NULL :
        ul_call_handling(exc, fatal_error, exc, data_received_failed);
    Py_XDECREF(fatal_error);
    Py_DECREF(exc);
    if (reported == NULL)
        return NULL;
    Py_DECREF(reported);
    UL_RETURN_NONE;
}

static PyObject *
stream_on_recv_multishot(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int plain = fields_reached(self);
    if (plain < 0)
        return NULL;
    long res = nargs == 2 ? PyLong_AsLong(args[0]) : -1;
    unsigned long flags = nargs == 2 ? PyLong_AsUnsignedLong(args[1]) : 0;
    PyObject *data = NULL;
    if (PyErr_Occurred()) {
        PyErr_Clear();
    } else if (plain && res > 0 &&
               (flags & IORING_CQE_F_MORE) && field_is(self, F_CONN_LOST, Py_False) && field_is(self, F_CLOSING, Py_False) &&
               field_is(self, F_PAUSED, Py_False) && field_is(self, F_BUFFERED, Py_False)) {
        PyObject *held = field(self, F_HELD_RESULTS);
        if (held != NULL && PyList_CheckExact(held) && PyList_Size(held) == 0) {
            PyObject *pool = field(self, F_RECEIVE_POOL);
            data = received_bytes(pool, flags, res);
            Py_XDECREF(pool);
        }
        Py_XDECREF(held);
        if (data == NULL && PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_MemoryError))
            PyErr_Clear();
        if (PyErr_Occurred())
            return NULL;
    }
    if (data == NULL)
        return ul_call_with_self(on_recv_reference, self, args, nargs, NULL);
    /* The per-message path: deliver and stay armed. */
    PyObject *protocol = field(self, F_PROTOCOL);
    PyObject *delivered = protocol == NULL ? NULL :
        PyObject_CallMethodObjArgs(protocol, s_data_received, data, NULL);
    Py_XDECREF(protocol);
    Py_DECREF(data);
    if (delivered == NULL)
        return data_received_error(self);
    Py_DECREF(delivered);
    PyObject *recv_op = field(self, F_RECV_OP);
    if (recv_op == NULL)
        return NULL;
    int rearm = recv_op == Py_None;
    Py_DECREF(recv_op);
    if (rearm)
        return PyObject_CallMethodObjArgs(self, s_start_reading, NULL);
    UL_RETURN_NONE;
}

/* -- the class ---------------------------------------------------------- */

static PyMethodDef stream_methods[] = {
    {"write", (PyCFunction)(void (*)(void))stream_write, METH_FASTCALL | METH_KEYWORDS,
     "write($self, data)\n--\n\nStreamPerMessage.write, its plain case in C."},
    {"_on_recv_multishot", (PyCFunction)(void (*)(void))stream_on_recv_multishot,
     METH_FASTCALL,
     "_on_recv_multishot($self, res, flags, /)\n--\n\n"
     "StreamPerMessage._on_recv_multishot, its plain case in C."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot stream_slots[] = {
    {Py_tp_methods, stream_methods},
    {Py_tp_doc, "The stream transport's per-message methods in C (csrc/stream_speedups.c)."},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    "uringloop._speedups.StreamPerMessage", 0, 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, stream_slots,
};

static int
intern_stream_names(void)
{
    static const struct ul_name names[] = {
        {&s_data_received, "data_received"}, {&s_fatal_error, "_fatal_error"},
        {&s_start_reading, "_start_reading"}, {&s_after_queued_write, "_after_queued_write"},
        {&data_received_failed, "Fatal error: protocol.data_received() call failed."},
    };
    return ul_intern_names(names, sizeof(names) / sizeof(names[0]));
}

PyObject *
ul_stream_class(PyObject *module, PyObject *reference)
{
    (void)module;
    if (!PyType_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "stream_class(reference): a class");
        return NULL;
    }
    if (intern_stream_names() < 0)
        return NULL;
    Py_ssize_t offsets[FIELD_COUNT];
    PyObject *write = PyObject_GetAttrString(reference, "write");
    PyObject *on_recv = write ? PyObject_GetAttrString(reference, "_on_recv_multishot") : NULL;
    PyObject *type = on_recv ?
        ul_subclass(&stream_spec, reference, field_names, FIELD_COUNT, offsets) : NULL;
    if (type == NULL) {
        Py_XDECREF(write);
        Py_XDECREF(on_recv);
        return NULL;
    }
    memcpy(field_offset, offsets, sizeof(offsets));
    Py_XDECREF(stream_type);
    stream_type = Py_NewRef(type);
    Py_CLEAR(plain_class.type);   /* its answer was about the previous class */
    Py_XDECREF(write_reference);
    write_reference = write;
    Py_XDECREF(on_recv_reference);
    on_recv_reference = on_recv;
    return type;
}
