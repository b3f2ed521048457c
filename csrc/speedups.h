/* What the two files of uringloop._speedups share: speedups.c (the loop
 * turn, completion dispatch) and stream_speedups.c (the stream transport's
 * per-message methods). */
#ifndef URINGLOOP_SPEEDUPS_H
#define URINGLOOP_SPEEDUPS_H

#include <Python.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "uring.h"   /* needs the two above */

/* Returning None with the new reference the caller owns.  CPython 3.12's
 * and 3.13's headers define Py_RETURN_NONE as a plain ``return Py_None``
 * (None is immortal there) even under Py_LIMITED_API 3.11, so an abi3
 * binary built with them took one reference from None per call on 3.11,
 * whose None is not immortal, until the interpreter aborted. */
#define UL_RETURN_NONE return Py_NewRef(Py_None)

/* _uring's ul_sendq_write, called through its address (configure()'s
 * sendq_write), or NULL while unconfigured. */
typedef __typeof__(ul_sendq_write) sendq_write_fn;
extern sendq_write_fn *ul_speedups_sendq_write;

/* Handling the pending exception as an ``except`` block does (speedups.c). */
PyObject *ul_take_exception(void);
void ul_restore_exception(PyObject *exc);
PyObject *ul_call_handling(PyObject *exc, PyObject *func, PyObject *arg1, PyObject *arg2);

/* Interning a table of attribute names (each slot set once). */
struct ul_name { PyObject **slot; const char *name; };
int ul_intern_names(const struct ul_name *names, size_t count);

/* type.name, a slot's member descriptor: a new reference with its get and
 * set functions, or NULL with an error (TypeError when not a slot). */
PyObject *ul_slot_descriptor(PyObject *type, const char *name, descrgetfunc *get,
                             descrsetfunc *set);

/* A class made from ``spec`` with ``reference`` as its one base: the C
 * methods over a Python reference (a new reference, or NULL).  It also
 * owns the attributes ``field_names`` as object fields after the
 * reference's layout (field_offsets[i] receives each one's offset): Python
 * code finds their member descriptors before any of the reference's, so
 * the C methods read the same storage at a fixed offset instead of
 * through a descriptor call.  The reference's own slots of those names
 * stay in the layout, unused. */
PyObject *ul_subclass(PyType_Spec *spec, PyObject *reference, const char *const *field_names,
                      int field_count, Py_ssize_t *field_offsets);

/* Whether attribute access on instances of ``type`` reaches the fields
 * ul_subclass gave ``owner``: ``type`` derives from it, keeps generic
 * attribute lookup, and finds each name's member descriptor there and not
 * a subclass's attribute in front of it.  1, 0, or -1 with an error.  The
 * answer is kept in ``check`` for the last type asked about (one per
 * program, in practice); a class changed after that is not looked at
 * again. */
struct ul_field_check { PyObject *type; int reached; };
int ul_fields_reach_checked(struct ul_field_check *check, PyTypeObject *type, PyObject *owner,
                            const char *const *field_names, int field_count);

static inline int
ul_fields_reach(struct ul_field_check *check, PyTypeObject *type, PyObject *owner,
                const char *const *field_names, int field_count)
{
    if ((PyObject *)type == check->type)
        return check->reached;
    return ul_fields_reach_checked(check, type, owner, field_names, field_count);
}

/* func(self, *args, **kwargs) for a vectorcall's arguments (a C method
 * handing a call it does not take to its Python reference). */
PyObject *ul_call_with_self(PyObject *func, PyObject *self, PyObject *const *args,
                            Py_ssize_t nargs, PyObject *kwnames);

/* _speedups.stream_class(reference): see stream_speedups.c. */
PyObject *ul_stream_class(PyObject *module, PyObject *reference);

#endif
