/* uringloop._speedups: the loop turn, the timer heap and completion
 * dispatch in C.
 *
 * What it owns: nothing but borrowed views of the loop's own state.  The
 * ready queue (loop._ready, a deque), the timer heap (loop._scheduled, a
 * list kept in heapq order) and every handle stay the Python objects that
 * asyncio's code reads and writes; this module only walks them faster.
 * The loop's fields that hold them (and the other fields a turn reads)
 * are stored in the C class turn_class makes, so the turn reads them at a
 * fixed offset while asyncio's code reaches them as attributes.
 * uringloop/_turn.py chooses between it and asyncio's Python _run_once
 * (debug mode, URINGLOOP_PURE_PYTHON=1, a patched Handle._run) and hands it,
 * through configure(), the few Python pieces it calls back into.
 *
 * Data flow of run_once(loop), asyncio's BaseEventLoop._run_once outside
 * debug mode, step for step:
 *   1. drop cancelled timers: rebuild the heap when more than 100 timers
 *      are scheduled and over half are cancelled, else pop cancelled heads;
 *   2. timeout: 0 when callbacks are ready or the loop is stopping, else
 *      until the earliest timer (at most MAXIMUM_SELECT_TIMEOUT), else None;
 *   3. loop._selector.select(timeout), loop._process_events(events) (skipped
 *      for no events when it is asyncio's own, which then does nothing; for
 *      the ring turn made here, the loop says whether it is, when made).
 *      When the selector has no fd to arm and the ring nothing unfinished
 *      (loop._c_ring_turn, see ring_select), the ring turn is made here:
 *      one ul_ring_turn call (its address from the cffi module, which
 *      releases the GIL around the wait), whose
 *      batch of completions (a Batch: a copy of the completion array) is
 *      deferred as Ring.take_turn and Loop._schedule_completions defer it,
 *      but without a handle: step 5 runs it at the place in the ready
 *      queue its handle would have taken (see defer_batch, run_batch); a
 *      turn that reaped polls, a full batch or an error goes back to
 *      Ring.take_turn and RingSelector.fired_events;
 *   4. timers due before time() + clock_resolution move to the ready queue;
 *   5. the handles ready now (not those they schedule) run, cancelled ones
 *      skipped, each as handle._context.run(handle._callback, *handle._args).
 * A callback's exception goes to the report function (Handle._run's except
 * branch, in Python) while it is the exception being handled, as in
 * Handle._run; SystemExit and KeyboardInterrupt propagate.  A handle of a
 * type other than asyncio's or uringloop's runs through its own _run(), and
 * if a callback switches debug mode on, the rest of the turn runs each
 * handle through the debug runner (asyncio's debug branch, in Python).
 *
 * run_callbacks(ring, ring._ops, ring._unfinished, batch) is
 * Ring.run_callbacks (uringloop/_ring.py, the reference) step for step:
 * the loop's ready queue runs it for each deferred batch, Ring.run_callbacks
 * calls it for the rest.  A Batch is read directly, any other batch (the
 * Python turn's) as an iterator of (user_data, res, flags).
 *
 * new_handle is uringloop._scheduling.Handle(...) (call_soon's handle)
 * without the frame of its __init__: the same slots set through their
 * descriptors.
 *
 * receive_bytes is Ring.receive_buffer: the bytes of a receive into a
 * provided buffer, copied out; sendq_write is ul_sendq_write for the stream
 * transport's Python write(), called directly (its address, like
 * ul_ring_turn's, comes from the cffi module).  stream_class is
 * csrc/stream_speedups.c's: the transport's per-message methods in C.
 *
 * The heap functions are heapq's algorithms with the comparison
 * TimerHandle.__lt__ makes (a._when < b._when), done on the floats
 * directly: the heap stays exactly the one heapq would build.
 *
 * Built against the limited API of 3.11 (one abi3 extension for every
 * Python version), so objects are reached through function calls only,
 * except the fields of the classes made here (ul_subclass).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>   /* T_OBJECT_EX, for ul_subclass's fields */
#include <stdint.h>

#include <linux/io_uring.h>
#include <string.h>

#include "speedups.h"

/* Interned attribute names and what configure() handed in.  Module-level
 * because the module keeps no per-interpreter state worth the machinery. */
static PyObject *s_when, *s_cancelled, *s_scheduled, *s_timer_cancelled_count,
    *s_ready, *s_stopping, *s_time, *s_selector, *s_select, *s_process_events,
    *s_clock_resolution, *s_popleft, *s_append, *s_context, *s_callback, *s_args,
    *s_debug, *s_run, *s_c_ring_turn, *s_take_turn, *s_fired_events, *s_run_turn,
    *s_context_run, *s_on_completion, *s_on_callback_error, *s_loop, *s_repr,
    *s_source_traceback, *s_run_callbacks, *s_sock_ops, *s_run_once,
    *s_speedups, *s_closed, *s_context_keyword;
static PyObject *context_type;     /* contextvars.Context */
static PyObject *copy_context;     /* contextvars.copy_context */
static PyObject *lean_handle_type; /* uringloop._scheduling.Handle */
/* Its slots' descriptors (asyncio.Handle's), in the order of its
 * __init__'s assignments, with their __set__ and __get__: a slot reached
 * through them skips PyObject_SetAttr's or GetAttr's type lookup (~200
 * instructions a slot, as much as the Python __init__).  Read so for the
 * handle types of handle_types, which add no slot of these names. */
enum { SLOT_CONTEXT, SLOT_LOOP, SLOT_CALLBACK, SLOT_ARGS, SLOT_CANCELLED, SLOT_REPR,
       SLOT_SOURCE_TRACEBACK, HANDLE_SLOTS };
static const char *const handle_slot_names[HANDLE_SLOTS] = {
    "_context", "_loop", "_callback", "_args", "_cancelled", "_repr", "_source_traceback"};
static PyObject *handle_slots[HANDLE_SLOTS];
static descrsetfunc handle_slot_set[HANDLE_SLOTS];
static descrgetfunc handle_slot_get[HANDLE_SLOTS];
/* The lean handle's C class (handle_class) owns fields of these names, so
 * its instances' slots are read and set at an offset instead. */
static PyObject *c_handle_type, *c_handle_reference;
static Py_ssize_t handle_field_offset[HANDLE_SLOTS];
#define HANDLE_FIELD(handle, slot) (*(PyObject **)((char *)(handle) + handle_field_offset[slot]))
static PyObject *this_module;      /* for its run_callbacks, as Python finds it */
static PyObject *stock_run_callbacks;  /* its run_callbacks as it made it */
static PyObject *context_run;      /* contextvars.Context.run, unbound */
static PyObject *report_error;     /* report(handle, exc) */
static PyObject *debug_run;        /* debug_run(loop, handle) */
static PyObject *handle_types;     /* tuple of the types run inline */
#define MAX_HANDLE_TYPES 8
static PyObject *handle_type_list[MAX_HANDLE_TYPES];   /* borrowed from handle_types */
static Py_ssize_t handle_type_count;
static PyObject *stock_process_events;  /* BaseSelectorEventLoop._process_events */
static double max_timeout;         /* asyncio's MAXIMUM_SELECT_TIMEOUT */
typedef __typeof__(ul_ring_turn) ring_turn_fn;
static ring_turn_fn *ring_turn;    /* _uring's ul_ring_turn, or NULL */
sendq_write_fn *ul_speedups_sendq_write;   /* see speedups.h */

#define MIN_SCHEDULED_TIMER_HANDLES 100
#define MIN_CANCELLED_TIMER_HANDLES_FRACTION 0.5

/* -- the timer heap ------------------------------------------------- */

/* a < b as TimerHandle.__lt__ decides it: 1, 0, or -1 with an error. */
static int
timer_less(PyObject *a, PyObject *b)
{
    PyObject *wa = PyObject_GetAttr(a, s_when);
    if (wa == NULL)
        goto generic;
    PyObject *wb = PyObject_GetAttr(b, s_when);
    if (wb == NULL) {
        Py_DECREF(wa);
        goto generic;
    }
    int less;
    if (PyFloat_CheckExact(wa) && PyFloat_CheckExact(wb))
        less = PyFloat_AsDouble(wa) < PyFloat_AsDouble(wb);
    else
        less = PyObject_RichCompareBool(wa, wb, Py_LT);
    Py_DECREF(wa);
    Py_DECREF(wb);
    return less;
generic:
    /* Not a timer handle: let the objects compare themselves, as heapq does. */
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return PyObject_RichCompareBool(a, b, Py_LT);
}

/* heapq's _siftdown: move heap[pos] up towards start while smaller than
 * its parent.  0, or -1 with an error. */
static int
sift_down(PyObject *heap, Py_ssize_t start, Py_ssize_t pos)
{
    PyObject *item = PyList_GetItem(heap, pos);
    if (item == NULL)
        return -1;
    Py_INCREF(item);
    while (pos > start) {
        Py_ssize_t parent_pos = (pos - 1) >> 1;
        PyObject *parent = PyList_GetItem(heap, parent_pos);
        if (parent == NULL)
            goto fail;
        Py_INCREF(parent);
        int less = timer_less(item, parent);
        if (less <= 0) {
            Py_DECREF(parent);
            if (less < 0)
                goto fail;
            break;
        }
        if (PyList_Size(heap) <= pos) {
            Py_DECREF(parent);
            PyErr_SetString(PyExc_RuntimeError, "timer heap changed size during sift");
            goto fail;
        }
        PyList_SetItem(heap, pos, parent);   /* steals parent */
        pos = parent_pos;
    }
    if (PyList_Size(heap) <= pos) {
        PyErr_SetString(PyExc_RuntimeError, "timer heap changed size during sift");
        goto fail;
    }
    return PyList_SetItem(heap, pos, item);   /* steals item */
fail:
    Py_DECREF(item);
    return -1;
}

/* heapq's _siftup: the smaller child moves up until a leaf is reached,
 * then heap[pos]'s old item sifts down from there. */
static int
sift_up(PyObject *heap, Py_ssize_t pos)
{
    Py_ssize_t end = PyList_Size(heap), start = pos;
    PyObject *item = PyList_GetItem(heap, pos);
    if (item == NULL)
        return -1;
    Py_INCREF(item);
    Py_ssize_t child = 2 * pos + 1;
    while (child < end) {
        Py_ssize_t right = child + 1;
        if (right < end) {
            PyObject *left_item = Py_NewRef(PyList_GetItem(heap, child));
            PyObject *right_item = Py_NewRef(PyList_GetItem(heap, right));
            int less = timer_less(left_item, right_item);
            Py_DECREF(left_item);
            Py_DECREF(right_item);
            if (less < 0)
                goto fail;
            if (!less)
                child = right;
        }
        if (PyList_Size(heap) != end) {
            PyErr_SetString(PyExc_RuntimeError, "timer heap changed size during sift");
            goto fail;
        }
        PyObject *moved = PyList_GetItem(heap, child);
        Py_INCREF(moved);
        PyList_SetItem(heap, pos, moved);
        pos = child;
        child = 2 * pos + 1;
    }
    Py_INCREF(item);
    if (PyList_SetItem(heap, pos, item) < 0)
        goto fail;
    Py_DECREF(item);
    return sift_down(heap, start, pos);
fail:
    Py_DECREF(item);
    return -1;
}

static int
heap_push_item(PyObject *heap, PyObject *item)
{
    if (PyList_Append(heap, item) < 0)
        return -1;
    return sift_down(heap, 0, PyList_Size(heap) - 1);
}

/* heapq.heappop: a new reference, or NULL with an error. */
static PyObject *
heap_pop_item(PyObject *heap)
{
    Py_ssize_t n = PyList_Size(heap);
    if (n <= 0) {
        PyErr_SetString(PyExc_IndexError, "index out of range");
        return NULL;
    }
    PyObject *last = PyList_GetItem(heap, n - 1);
    Py_INCREF(last);
    if (PyList_SetSlice(heap, n - 1, n, NULL) < 0) {
        Py_DECREF(last);
        return NULL;
    }
    if (n == 1)
        return last;
    PyObject *first = PyList_GetItem(heap, 0);
    Py_INCREF(first);
    PyList_SetItem(heap, 0, last);   /* steals last */
    if (sift_up(heap, 0) < 0) {
        Py_DECREF(first);
        return NULL;
    }
    return first;
}

static PyObject *
heap_push(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "heap_push(list, item)");
        return NULL;
    }
    if (heap_push_item(args[0], args[1]) < 0)
        return NULL;
    UL_RETURN_NONE;
}

static PyObject *
heap_pop(PyObject *module, PyObject *heap)
{
    (void)module;
    if (!PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "heap_pop(list)");
        return NULL;
    }
    return heap_pop_item(heap);
}

/* -- the loop's fields ------------------------------------------------ */

/* The fields a turn reads from the loop (_ready, _scheduled, _stopping,
 * _debug, ...) are fields of the class turn_class makes (ul_subclass), so
 * for a loop class that reaches them (ul_fields_reach: no attribute of
 * these names put in front, generic lookup) they are read at their
 * offsets, a load instead of a dict lookup (~170 instructions, six or more
 * times a turn).  Any other loop is asked through PyObject_GetAttr. */
enum { LOOP_READY, LOOP_SCHEDULED, LOOP_STOPPING, LOOP_DEBUG, LOOP_C_RING_TURN,
       LOOP_TIMER_CANCELLED_COUNT, LOOP_SELECTOR, LOOP_SOCK_OPS, LOOP_CLOCK_RESOLUTION,
       LOOP_CLOSED, LOOP_FIELD_COUNT };
static const char *const loop_field_names[LOOP_FIELD_COUNT] = {
    "_ready", "_scheduled", "_stopping", "_debug", "_c_ring_turn", "_timer_cancelled_count",
    "_selector", "_sock_ops", "_clock_resolution", "_closed",
};
static PyObject **const loop_field_name_objects[LOOP_FIELD_COUNT] = {
    &s_ready, &s_scheduled, &s_stopping, &s_debug, &s_c_ring_turn, &s_timer_cancelled_count,
    &s_selector, &s_sock_ops, &s_clock_resolution, &s_closed,
};
static PyObject *turn_type;             /* the class turn_class made, or NULL */
static Py_ssize_t loop_field_offset[LOOP_FIELD_COUNT];
static struct ul_field_check loop_check;

/* loop.<field>: a new reference, or NULL with an error. */
static PyObject *
loop_attr(PyObject *loop, int which)
{
    if (turn_type != NULL) {
        int reached = ul_fields_reach(&loop_check, Py_TYPE(loop), turn_type, loop_field_names,
                                      LOOP_FIELD_COUNT);
        if (reached < 0)
            return NULL;
        PyObject *value = reached ?
            *(PyObject **)((char *)loop + loop_field_offset[which]) : NULL;
        if (value != NULL)
            return Py_NewRef(value);
    }
    /* Unset (asyncio's AttributeError), or a loop of another layout. */
    return PyObject_GetAttr(loop, *loop_field_name_objects[which]);
}

/* value is true: 1, 0, or -1 with an error; consumes the reference. */
static int
truth_of(PyObject *value)
{
    if (value == NULL)
        return -1;
    int truth = value == Py_True ? 1 : value == Py_False ? 0 : PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

static int
loop_attr_true(PyObject *loop, int which)
{
    return truth_of(loop_attr(loop, which));
}

/* -- the turn ------------------------------------------------------- */

/* obj.name is true: 1, 0, or -1 with an error. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    return truth_of(PyObject_GetAttr(obj, name));
}

static int
set_unscheduled(PyObject *handle)
{
    return PyObject_SetAttr(handle, s_scheduled, Py_False);
}

/* Step 1: asyncio's cleanup of cancelled timers.  The heap to use from
 * here (a new reference), or NULL with an error. */
static PyObject *
drop_cancelled_timers(PyObject *loop)
{
    PyObject *heap = loop_attr(loop, LOOP_SCHEDULED);
    if (heap == NULL)
        return NULL;
    if (!PyList_Check(heap)) {
        PyErr_SetString(PyExc_TypeError, "loop._scheduled is not a list");
        goto fail;
    }
    Py_ssize_t count = PyList_Size(heap);
    if (count > MIN_SCHEDULED_TIMER_HANDLES) {
        PyObject *cancelled_obj = loop_attr(loop, LOOP_TIMER_CANCELLED_COUNT);
        if (cancelled_obj == NULL)
            goto fail;
        double cancelled = PyFloat_AsDouble(cancelled_obj);
        Py_DECREF(cancelled_obj);
        if (cancelled == -1.0 && PyErr_Occurred())
            goto fail;
        if (cancelled / (double)count > MIN_CANCELLED_TIMER_HANDLES_FRACTION) {
            PyObject *kept = PyList_New(0);
            if (kept == NULL)
                goto fail;
            for (Py_ssize_t i = 0; i < PyList_Size(heap); i++) {
                PyObject *timer = PyList_GetItem(heap, i);
                int is_cancelled = attr_true(timer, s_cancelled);
                if (is_cancelled < 0 || (is_cancelled ? set_unscheduled(timer)
                                         : PyList_Append(kept, timer)) < 0) {
                    Py_DECREF(kept);
                    goto fail;
                }
            }
            /* heapq.heapify */
            for (Py_ssize_t i = PyList_Size(kept) / 2 - 1; i >= 0; i--) {
                if (sift_up(kept, i) < 0) {
                    Py_DECREF(kept);
                    goto fail;
                }
            }
            Py_DECREF(heap);
            heap = kept;
            if (PyObject_SetAttr(loop, s_scheduled, heap) < 0)
                goto fail;
            PyObject *zero = PyLong_FromLong(0);
            if (zero == NULL)
                goto fail;
            int rc = PyObject_SetAttr(loop, s_timer_cancelled_count, zero);
            Py_DECREF(zero);
            if (rc < 0)
                goto fail;
            return heap;
        }
    }
    while (PyList_Size(heap) > 0) {
        int is_cancelled = attr_true(PyList_GetItem(heap, 0), s_cancelled);
        if (is_cancelled <= 0) {
            if (is_cancelled < 0)
                goto fail;
            break;
        }
        PyObject *cancelled_obj = loop_attr(loop, LOOP_TIMER_CANCELLED_COUNT);
        if (cancelled_obj == NULL)
            goto fail;
        PyObject *one = PyLong_FromLong(1);
        PyObject *less = one == NULL ? NULL : PyNumber_Subtract(cancelled_obj, one);
        Py_XDECREF(one);
        Py_DECREF(cancelled_obj);
        if (less == NULL)
            goto fail;
        int rc = PyObject_SetAttr(loop, s_timer_cancelled_count, less);
        Py_DECREF(less);
        if (rc < 0)
            goto fail;
        PyObject *timer = heap_pop_item(heap);
        if (timer == NULL)
            goto fail;
        rc = set_unscheduled(timer);
        Py_DECREF(timer);
        if (rc < 0)
            goto fail;
    }
    return heap;
fail:
    Py_DECREF(heap);
    return NULL;
}

/* loop.time() as a double; -1.0 with an error set on failure. */
static double
loop_time(PyObject *loop)
{
    PyObject *now = PyObject_CallMethodObjArgs(loop, s_time, NULL);
    if (now == NULL)
        return -1.0;
    double value = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return value;
}

/* Step 2: the select timeout (a new reference), or NULL with an error. */
static PyObject *
select_timeout(PyObject *loop, PyObject *ready, PyObject *heap)
{
    Py_ssize_t ready_count = PyObject_Size(ready);
    if (ready_count < 0)
        return NULL;
    int stopping = ready_count ? 1 : loop_attr_true(loop, LOOP_STOPPING);
    if (stopping < 0)
        return NULL;
    if (stopping)
        return PyLong_FromLong(0);
    if (PyList_Size(heap) == 0)
        UL_RETURN_NONE;
    PyObject *when_obj = PyObject_GetAttr(PyList_GetItem(heap, 0), s_when);
    if (when_obj == NULL)
        return NULL;
    double when = PyFloat_AsDouble(when_obj);
    Py_DECREF(when_obj);
    if (when == -1.0 && PyErr_Occurred())
        return NULL;
    double now = loop_time(loop);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    double timeout = when - now;
    if (timeout > max_timeout)
        timeout = max_timeout;
    else if (!(timeout > 0))
        return PyLong_FromLong(0);
    return PyFloat_FromDouble(timeout);
}

/* Step 4: move the timers due by now to the ready queue.  ``heap``: the
 * one step 1 used, when no Python code ran since (nothing can have
 * replaced loop._scheduled), or NULL to read it again as asyncio does. */
static int
move_due_timers(PyObject *loop, PyObject *ready, PyObject *heap)
{
    if (heap != NULL)
        Py_INCREF(heap);
    else if ((heap = loop_attr(loop, LOOP_SCHEDULED)) == NULL)
        return -1;
    if (!PyList_Check(heap) || PyList_Size(heap) == 0) {
        Py_DECREF(heap);
        return 0;
    }
    int rc = -1;
    PyObject *resolution = NULL, *end_obj = NULL;
    double now = loop_time(loop);
    if (now == -1.0 && PyErr_Occurred())
        goto done;
    resolution = loop_attr(loop, LOOP_CLOCK_RESOLUTION);
    if (resolution == NULL)
        goto done;
    double end_time = now + PyFloat_AsDouble(resolution);
    if (PyErr_Occurred())
        goto done;
    while (PyList_Size(heap) > 0) {
        PyObject *when = PyObject_GetAttr(PyList_GetItem(heap, 0), s_when);
        if (when == NULL)
            goto done;
        int later;
        if (PyFloat_CheckExact(when)) {
            later = PyFloat_AsDouble(when) >= end_time;
        } else {
            if (end_obj == NULL && (end_obj = PyFloat_FromDouble(end_time)) == NULL) {
                Py_DECREF(when);
                goto done;
            }
            later = PyObject_RichCompareBool(when, end_obj, Py_GE);
        }
        Py_DECREF(when);
        if (later < 0)
            goto done;
        if (later)
            break;
        PyObject *timer = heap_pop_item(heap);
        if (timer == NULL)
            goto done;
        PyObject *appended = NULL;
        if (set_unscheduled(timer) == 0)
            appended = PyObject_CallMethodObjArgs(ready, s_append, timer, NULL);
        Py_DECREF(timer);
        if (appended == NULL)
            goto done;
        Py_DECREF(appended);
    }
    rc = 0;
done:
    Py_XDECREF(end_obj);
    Py_XDECREF(resolution);
    Py_DECREF(heap);
    return rc;
}

/* handle.<name> (a new reference, or NULL with an error) for a handle of
 * one of the handle types (``known``) or any other. */
static PyObject *
handle_attr(PyObject *handle, int slot, PyObject *name, int known)
{
    if (c_handle_type != NULL && (PyObject *)Py_TYPE(handle) == c_handle_type) {
        PyObject *value = HANDLE_FIELD(handle, slot);
        return value != NULL ? Py_NewRef(value) : PyObject_GetAttr(handle, name);
    }
    if (known && handle_slot_get[slot] != NULL)
        return handle_slot_get[slot](handle_slots[slot], handle, NULL);
    return PyObject_GetAttr(handle, name);
}

/* Whether ``handle`` is of one of the handle types (run inline). */
static int
known_handle(PyObject *handle)
{
    for (Py_ssize_t i = 0; i < handle_type_count; i++) {
        if ((PyObject *)Py_TYPE(handle) == handle_type_list[i])
            return 1;
    }
    return 0;
}

/* handle._context.run(handle._callback, *handle._args) for a handle of one
 * of the handle types: the result (a new reference) or NULL with the
 * callback's exception set. */
static PyObject *
call_in_context(PyObject *handle)
{
    PyObject *context = handle_attr(handle, SLOT_CONTEXT, s_context, 1);
    PyObject *callback = context ? handle_attr(handle, SLOT_CALLBACK, s_callback, 1) : NULL;
    PyObject *args = callback ? handle_attr(handle, SLOT_ARGS, s_args, 1) : NULL;
    PyObject *call = NULL, *result = NULL;
    if (args == NULL)
        goto done;
    Py_ssize_t nargs = PyTuple_Check(args) ? PyTuple_Size(args) : -1;
    if (nargs < 0) {
        /* Not a tuple (never made so by asyncio): unpack as *args would. */
        PyObject *as_tuple = PySequence_Tuple(args);
        if (as_tuple == NULL)
            goto done;
        Py_DECREF(args);
        args = as_tuple;
        nargs = PyTuple_Size(args);
    }
    call = PyTuple_New(nargs + 2);
    if (call == NULL)
        goto done;
    PyTuple_SetItem(call, 0, Py_NewRef(context));
    PyTuple_SetItem(call, 1, Py_NewRef(callback));
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SetItem(call, i + 2, Py_NewRef(PyTuple_GetItem(args, i)));
    if ((PyObject *)Py_TYPE(context) == context_type) {
        result = PyObject_Call(context_run, call, NULL);
    } else {
        /* asyncio takes any object as a context and calls its run(): the
         * same call, so the same exception when it has none. */
        PyObject *run = PyObject_GetAttr(context, s_context_run);
        PyObject *rest = run ? PyTuple_GetSlice(call, 1, nargs + 2) : NULL;
        if (rest != NULL)
            result = PyObject_Call(run, rest, NULL);
        Py_XDECREF(rest);
        Py_XDECREF(run);
    }
done:
    Py_XDECREF(call);
    Py_XDECREF(args);
    Py_XDECREF(callback);
    Py_XDECREF(context);
    return result;
}

/* The pending exception (there must be one), normalized, with its
 * traceback attached, taken out of the error indicator: a new reference.
 * Taken before any other call: a type lookup that misses the attribute
 * cache while an exception is pending clears it. */
PyObject *
ul_take_exception(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
}

/* Raise ``exc`` again (a reference stolen), unchained. */
void
ul_restore_exception(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

/* func(arg1[, arg2]) called as from an ``except`` block handling ``exc``:
 * sys.exc_info() sees it during the call, and the exception handled
 * before is restored after.  The result, or NULL with func's error. */
PyObject *
ul_call_handling(PyObject *exc, PyObject *func, PyObject *arg1, PyObject *arg2)
{
    PyObject *old_type, *old_value, *old_traceback;
    PyErr_GetExcInfo(&old_type, &old_value, &old_traceback);
    PyErr_SetExcInfo(Py_NewRef((PyObject *)Py_TYPE(exc)), Py_NewRef(exc),
                     PyException_GetTraceback(exc));   /* steals all three */
    PyObject *result = PyObject_CallFunctionObjArgs(func, arg1, arg2, NULL);
    PyErr_SetExcInfo(old_type, old_value, old_traceback);
    return result;
}

/* Handle._run's except branch: report the pending exception through the
 * report function while it is the exception being handled (sys.exc_info()
 * in an exception handler sees it, as under Handle._run); SystemExit and
 * KeyboardInterrupt stay raised.  0, or -1 with an error. */
static int
report_callback_error(PyObject *handle)
{
    if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
            PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    PyObject *exc = ul_take_exception();
    PyObject *reported = ul_call_handling(exc, report_error, handle, exc);
    Py_DECREF(exc);
    if (reported == NULL)
        return -1;
    Py_DECREF(reported);
    return 0;
}

/* Run one handle taken from the ready queue.  ``debug``: loop._debug if
 * no Python code ran since the turn read it, else -1 (read it now). */
static int
run_handle(PyObject *loop, PyObject *handle, int known, int debug)
{
    /* Another type's _cancelled may have been Python code. */
    if ((debug < 0 || !known) && (debug = loop_attr_true(loop, LOOP_DEBUG)) < 0)
        return -1;
    PyObject *result;
    if (debug) {
        result = PyObject_CallFunctionObjArgs(debug_run, loop, handle, NULL);
    } else {
        if (!known)
            result = PyObject_CallMethodObjArgs(handle, s_run, NULL);
        else if ((result = call_in_context(handle)) == NULL)
            return report_callback_error(handle);
    }
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* -- the ring's side of the C turn ------------------------------------ */

/* TurnState(ring, out, inline_count, batch_size, unfinished): what the C
 * turn needs to make a ring turn itself, held by the ring as
 * Ring.c_turn_state (uringloop/_ring.py): the addresses of the ring, its
 * completion array and inline count (Python ints), the batch size, the
 * ring's list of unfinished batches, and the thread the ring is bound to
 * (bind(thread_ident), by Ring._bind_thread).  close() empties it when the
 * ring may no longer be entered (closed, or a forked child's).  Read by
 * ring_select as a struct: it replaced a list of Python ints whose
 * unpacking cost ~350 instructions a turn. */
typedef struct {
    PyObject_HEAD
    struct ul_ring *ring;   /* NULL once closed */
    struct ul_completion *out;
    unsigned *inline_count;
    long batch_size;
    unsigned long thread;
    int bound;
    PyObject *unfinished;
} TurnState;

static PyObject *turn_state_type;

static PyObject *
turn_state_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *ring, *out, *inline_count, *unfinished;
    long batch_size;
    static char *keywords[] = {"ring", "out", "inline_count", "batch_size", "unfinished",
                               NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOlO!:TurnState", keywords, &ring, &out,
                                     &inline_count, &batch_size, &PyList_Type, &unfinished))
        return NULL;
    void *ring_address = PyLong_AsVoidPtr(ring);
    void *out_address = ring_address ? PyLong_AsVoidPtr(out) : NULL;
    void *inline_address = out_address ? PyLong_AsVoidPtr(inline_count) : NULL;
    if (inline_address == NULL || batch_size <= 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "TurnState: three addresses and a positive batch size");
        return NULL;
    }
    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    TurnState *self = (TurnState *)alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ring = ring_address;
    self->out = out_address;
    self->inline_count = inline_address;
    self->batch_size = batch_size;
    self->unfinished = Py_NewRef(unfinished);
    return (PyObject *)self;
}

static int
turn_state_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(((TurnState *)self)->unfinished);
    return 0;
}

static int
turn_state_clear(PyObject *self)
{
    Py_CLEAR(((TurnState *)self)->unfinished);
    return 0;
}

static void
turn_state_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    turn_state_clear(self);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *
turn_state_bind(PyObject *self, PyObject *thread)
{
    unsigned long ident = PyLong_AsUnsignedLong(thread);
    if (ident == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    ((TurnState *)self)->thread = ident;
    ((TurnState *)self)->bound = 1;
    UL_RETURN_NONE;
}

static PyObject *
turn_state_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    TurnState *state = (TurnState *)self;
    state->ring = NULL;
    state->out = NULL;
    state->inline_count = NULL;
    Py_CLEAR(state->unfinished);
    UL_RETURN_NONE;
}

static PyMethodDef turn_state_methods[] = {
    {"bind", turn_state_bind, METH_O,
     "bind(thread_ident): the thread the ring is bound to; the C turn runs only there."},
    {"close", turn_state_close, METH_NOARGS,
     "close(): the ring may no longer be entered; the C turn leaves it to Python."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot turn_state_slots[] = {
    {Py_tp_new, turn_state_new},
    {Py_tp_traverse, turn_state_traverse},
    {Py_tp_clear, turn_state_clear},
    {Py_tp_dealloc, turn_state_dealloc},
    {Py_tp_methods, turn_state_methods},
    {Py_tp_doc, "The ring's side of the C turn (Ring.c_turn_state)."},
    {0, NULL},
};

static PyType_Spec turn_state_spec = {
    "uringloop._speedups.TurnState", sizeof(TurnState), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, turn_state_slots,
};

/* Indexes of loop._c_ring_turn (uringloop/loop.py). */
enum { TURN_STATE, TURN_TO_ARM, TURN_FIRED, TURN_DEFER, TURN_SELECTOR, TURN_RING,
       TURN_STOCK_EVENTS, TURN_READY, TURN_OPS, TURN_SIZE };

/* -- the ops-table entry of a plain callback ------------------------------ */

/* callback_class(reference) makes a subclass of ``reference``
 * (_op.RingCallback) that owns its on_completion field, so run_callbacks
 * reads an entry of exactly that class at an offset instead of through
 * PyObject_GetAttr (~160 instructions a completion). */
static const char *const callback_field_names[] = {"on_completion"};
static PyObject *callback_type;            /* the class callback_class made */
static Py_ssize_t on_completion_offset;

static PyType_Slot callback_slots[] = {
    {Py_tp_doc, "A ring callback entry whose on_completion C reads directly "
                "(csrc/speedups.c)."},
    {0, NULL},
};

static PyType_Spec callback_spec = {
    "uringloop._speedups.RingCallback", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    callback_slots,
};

static PyObject *
callback_class(PyObject *module, PyObject *reference)
{
    (void)module;
    if (!PyType_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "callback_class(reference): a class");
        return NULL;
    }
    Py_ssize_t offset;
    PyObject *type = ul_subclass(&callback_spec, reference, callback_field_names, 1, &offset);
    if (type == NULL)
        return NULL;
    on_completion_offset = offset;
    Py_XDECREF(callback_type);
    callback_type = Py_NewRef(type);
    return type;
}

/* entry.on_completion: a new reference, or NULL with an error. */
static PyObject *
entry_on_completion(PyObject *entry)
{
    if (callback_type != NULL && Py_TYPE(entry) == (PyTypeObject *)callback_type) {
        PyObject *value = *(PyObject **)((char *)entry + on_completion_offset);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(entry, s_on_completion);
}

/* -- the lean handle ------------------------------------------------------ */

/* handle_class(reference) makes a subclass of ``reference``
 * (_scheduling.HandleReference, asyncio's Handle built in one step) that
 * owns the handle's slots as fields: new_handle fills them and the turn
 * reads them at their offsets, without a descriptor call each (~70
 * instructions a slot, seven set for every call_soon). */
static PyType_Slot handle_type_slots[] = {
    {Py_tp_doc, "asyncio's Handle whose slots C reads and sets directly (csrc/speedups.c)."},
    {0, NULL},
};

static PyType_Spec handle_type_spec = {
    "uringloop._speedups.Handle", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    handle_type_slots,
};

static PyObject *
handle_class(PyObject *module, PyObject *reference)
{
    (void)module;
    if (!PyType_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "handle_class(reference): a class");
        return NULL;
    }
    Py_ssize_t offsets[HANDLE_SLOTS];
    PyObject *type = ul_subclass(&handle_type_spec, reference, handle_slot_names, HANDLE_SLOTS,
                                 offsets);
    if (type == NULL)
        return NULL;
    if (lean_handle_type != NULL && lean_handle_type == c_handle_type)
        Py_CLEAR(lean_handle_type);   /* made for the previous class: configure() again */
    memcpy(handle_field_offset, offsets, sizeof(offsets));
    Py_XDECREF(c_handle_type);
    c_handle_type = Py_NewRef(type);
    Py_XDECREF(c_handle_reference);
    c_handle_reference = Py_NewRef(reference);
    return type;
}

/* -- completion dispatch ---------------------------------------------- */

/* A batch of completions copied out of the ring's array: what the C turn
 * defers, consumed in order by run_callbacks (``next`` advances before each
 * callback runs, so a callback that raises leaves the rest unfinished).  It
 * iterates as Ring.take_turn's batches do, as (user_data, res, flags)
 * tuples, for the Python paths (Ring.close forgets unfinished batches, the
 * reference run_callbacks).  It holds no Python object: no GC support. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t next, count;
    struct ul_completion *items;
} Batch;

static PyObject *batch_type;

static void
batch_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyMem_Free(((Batch *)self)->items);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *
batch_iter(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
completion_tuple(const struct ul_completion *c)
{
    return Py_BuildValue("(KiI)", (unsigned long long)c->user_data, (int)c->res,
                         (unsigned int)c->flags);
}

static PyObject *
batch_next(PyObject *self)
{
    Batch *batch = (Batch *)self;
    if (batch->next >= batch->count)
        return NULL;
    return completion_tuple(&batch->items[batch->next++]);
}

static PyType_Slot batch_slots[] = {
    {Py_tp_dealloc, batch_dealloc},
    {Py_tp_iter, batch_iter},
    {Py_tp_iternext, batch_next},
    {Py_tp_doc, "Completions of one ring turn, consumed by run_callbacks."},
    {0, NULL},
};

static PyType_Spec batch_spec = {
    "uringloop._speedups.Batch", sizeof(Batch), 0, Py_TPFLAGS_DEFAULT, batch_slots,
};

/* The completions of a turn as Ring.take_turn defers them (a new Batch),
 * appended by the caller to the ring's unfinished batches. */
static PyObject *
completion_batch(const struct ul_completion *out, int count)
{
    struct ul_completion *items = PyMem_Malloc(sizeof(*items) * (size_t)count);
    if (items == NULL)
        return PyErr_NoMemory();
    allocfunc tp_alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)batch_type, Py_tp_alloc);
    Batch *batch = (Batch *)tp_alloc((PyTypeObject *)batch_type, 0);
    if (batch == NULL) {
        PyMem_Free(items);
        return NULL;
    }
    memcpy(items, out, sizeof(*items) * (size_t)count);
    batch->items = items;
    batch->next = 0;
    batch->count = count;
    return (PyObject *)batch;
}

/* The next completion of ``iterator`` (any iterator of (user_data, res,
 * flags), or a Batch read directly): 1, 0 when exhausted, -1 with an
 * error.  *key is a new reference to the user_data number. */
static int
next_completion(PyObject *iterator, PyObject **key, int *res, unsigned *flags)
{
    if (Py_TYPE(iterator) == (PyTypeObject *)batch_type) {
        Batch *batch = (Batch *)iterator;
        if (batch->next >= batch->count)
            return 0;
        const struct ul_completion *c = &batch->items[batch->next++];
        *res = c->res;
        *flags = c->flags;
        *key = PyLong_FromUnsignedLongLong(c->user_data);
        return *key == NULL ? -1 : 1;
    }
    PyObject *item = PyIter_Next(iterator);
    if (item == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *res_obj = NULL, *flags_obj = NULL;
    *key = NULL;
    /* ``for user_data, res, flags in batch`` */
    int ok = PyArg_ParseTuple(item, "OOO", key, &res_obj, &flags_obj);
    if (ok) {
        *res = (int)PyLong_AsLong(res_obj);
        *flags = (unsigned)PyLong_AsUnsignedLong(flags_obj);
        ok = !PyErr_Occurred();
    }
    if (ok)
        Py_INCREF(*key);
    Py_DECREF(item);
    return ok ? 1 : -1;
}

/* Ring.run_callbacks(batch) for the ring object ``ring``: the reference is
 * the Python method (uringloop/_ring.py), whose rules this follows step for
 * step.  Each entry is popped from ring._ops (only looked up while
 * IORING_CQE_F_MORE says more completions follow), skipped if gone, and
 * entry.on_completion(res, flags) called; an exception goes to
 * ring.on_callback_error (read at that moment) while it is the exception
 * being handled, or, without one or if it raises too, propagates with the
 * rest of the batch unfinished.  A finished batch leaves
 * ring._unfinished. */
static PyObject *
run_callbacks(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyDict_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "run_callbacks(ring, ring._ops, ring._unfinished, batch)");
        return NULL;
    }
    PyObject *ring = args[0], *ops = args[1], *unfinished = args[2], *batch = args[3];
    PyObject *iterator = PyObject_GetIter(batch);
    if (iterator == NULL)
        return NULL;
    for (;;) {
        /* A signal handler that raises does so here, between callbacks,
         * with the next completion still in the batch (which then stays
         * unfinished), not at the start of the next callback, after its
         * entry left the ops table: that operation would never finish. */
        if (PyErr_CheckSignals() < 0)
            goto fail;
        PyObject *key;
        int res;
        unsigned flags;
        int got = next_completion(iterator, &key, &res, &flags);
        if (got <= 0) {
            if (got < 0)
                goto fail;
            break;
        }
        PyObject *entry = PyDict_GetItemWithError(ops, key);   /* borrowed */
        if (entry == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred())
                goto fail;
            continue;   /* its ring closed meanwhile, or a stale completion */
        }
        Py_INCREF(entry);
        int removed = flags & IORING_CQE_F_MORE ? 0 : PyDict_DelItem(ops, key);
        Py_DECREF(key);
        if (entry == Py_None && removed == 0) {
            Py_DECREF(entry);
            continue;   /* as ``if entry is None`` */
        }
        /* The entry (with the buffers it keeps alive) is held until its
         * callback returns, as the Python loop's variable holds it. */
        PyObject *on_completion = removed < 0 ? NULL : entry_on_completion(entry);
        if (on_completion == NULL) {
            Py_DECREF(entry);
            goto fail;
        }
        PyObject *res_obj = PyLong_FromLong(res);
        PyObject *flags_obj = res_obj ? PyLong_FromUnsignedLong(flags) : NULL;
        PyObject *result = flags_obj ? PyObject_CallFunctionObjArgs(on_completion, res_obj,
                                                                    flags_obj, NULL) : NULL;
        Py_XDECREF(res_obj);
        Py_XDECREF(flags_obj);
        Py_DECREF(on_completion);
        if (result != NULL) {
            Py_DECREF(entry);
            Py_DECREF(result);
            continue;
        }
        /* except BaseException as exc: reported, never lost */
        PyObject *exc = ul_take_exception();
        PyObject *handler = PyObject_GetAttr(ring, s_on_callback_error);
        if (handler == NULL || handler == Py_None) {
            Py_XDECREF(handler);
            Py_DECREF(entry);
            if (handler == NULL) {
                /* getattr's error, raised while handling the callback's */
                PyObject *lookup_error = ul_take_exception();
                PyException_SetContext(lookup_error, exc);   /* steals exc */
                ul_restore_exception(lookup_error);
            } else {
                ul_restore_exception(exc);   /* the callback's */
            }
            goto fail;
        }
        PyObject *reported = ul_call_handling(exc, handler, exc, NULL);
        Py_DECREF(exc);
        Py_DECREF(handler);
        Py_DECREF(entry);
        if (reported == NULL)
            goto fail;
        Py_DECREF(reported);
    }
    Py_DECREF(iterator);
    /* if batch in self._unfinished: self._unfinished.remove(batch).  It is
     * almost always the first (list.remove would find it there by
     * identity too), which skips the sequence search (~330 instructions). */
    if (PyList_Size(unfinished) > 0 && PyList_GetItem(unfinished, 0) == batch) {
        if (PyList_SetSlice(unfinished, 0, 1, NULL) < 0)
            return NULL;
        UL_RETURN_NONE;
    }
    Py_ssize_t at = PySequence_Index(unfinished, batch);
    int rc = at >= 0 ? PySequence_DelItem(unfinished, at) : 0;
    if (at < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear();
    }
    if (rc < 0)
        return NULL;
    UL_RETURN_NONE;
fail:
    Py_DECREF(iterator);
    return NULL;
}

/* receive_bytes(base, count, size, flags, nbytes): Ring.receive_buffer in
 * C, the ``nbytes`` a receive delivered into the provided buffer its
 * completion ``flags`` name, copied into a new bytes object; ``base``,
 * ``count`` and ``size`` describe the pool (ul_bufring_base).  No
 * memoryview slice and no Python frame per receive. */
static PyObject *
receive_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "receive_bytes(base, count, size, flags, nbytes)");
        return NULL;
    }
    const char *base = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t count = PyLong_AsSsize_t(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    unsigned long flags = PyLong_AsUnsignedLong(args[3]);
    Py_ssize_t nbytes = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t buffer = (Py_ssize_t)(flags >> IORING_CQE_BUFFER_SHIFT);
    if (base == NULL || buffer >= count || nbytes < 0 || nbytes > size) {
        PyErr_SetString(PyExc_ValueError, "not a receive into the provided buffers");
        return NULL;
    }
    return PyBytes_FromStringAndSize(base + buffer * size, nbytes);
}

/* sendq_write(queue, data, nbytes): lib.ul_sendq_write(queue, data, nbytes)
 * for the stream transport's write(), ``queue`` being the queue's address
 * and ``data`` a bytes object, without cffi's argument conversion (~600
 * instructions a call).  The queue may keep the bytes object's buffer (a
 * big write, sent by reference): the transport keeps the object, as it
 * does after the cffi call. */
static PyObject *
sendq_write(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "sendq_write(queue, bytes, nbytes)");
        return NULL;
    }
    if (ul_speedups_sendq_write == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "uringloop._uring is not loaded");
        return NULL;
    }
    struct ul_sendq *queue = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t nbytes = PyLong_AsSsize_t(args[2]);
    char *data;
    Py_ssize_t length;
    if ((queue == NULL && PyErr_Occurred()) || (nbytes == -1 && PyErr_Occurred()) ||
            PyBytes_AsStringAndSize(args[1], &data, &length) < 0)
        return NULL;
    if (queue == NULL || nbytes < 0 || nbytes > length) {
        PyErr_SetString(PyExc_ValueError, "sendq_write: no queue, or nbytes out of range");
        return NULL;
    }
    return PyLong_FromLongLong(ul_speedups_sendq_write(queue, data, (size_t)nbytes));
}

/* _scheduling.Handle(callback, args, loop, context) without the frame of
 * its __init__ (whose assignments these are, in its order), or NULL with
 * an error. */
static PyObject *
new_handle_object(PyObject *callback, PyObject *args, PyObject *loop, PyObject *context)
{
    if (lean_handle_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "uringloop._speedups is not configured");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)lean_handle_type;
    allocfunc tp_alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    PyObject *handle = tp_alloc(type, 0);
    if (handle == NULL)
        return NULL;
    context = context == Py_None ? PyObject_CallNoArgs(copy_context) : Py_NewRef(context);
    if (context == NULL) {
        Py_DECREF(handle);
        return NULL;
    }
    PyObject *values[HANDLE_SLOTS] = {context, loop, callback, args, Py_False, Py_None, Py_None};
    if (lean_handle_type == c_handle_type) {
        for (int i = 0; i < HANDLE_SLOTS; i++)
            HANDLE_FIELD(handle, i) = Py_NewRef(values[i]);   /* a new object's: empty */
        Py_DECREF(context);
        return handle;
    }
    for (int i = 0; i < HANDLE_SLOTS; i++) {
        if (handle_slot_set[i](handle_slots[i], handle, values[i]) < 0) {
            Py_DECREF(context);
            Py_DECREF(handle);
            return NULL;
        }
    }
    Py_DECREF(context);
    return handle;
}

static PyObject *
new_handle(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "new_handle(callback, args, loop, context)");
        return NULL;
    }
    return new_handle_object(args[0], args[1], args[2], args[3]);
}

/* Loop._schedule_completions(batch) without its frame.  Outside debug
 * mode the batch takes no handle: *pending becomes the arguments of
 * run_callbacks(ring, ring._ops, ring._unfinished, batch) and *position
 * the ready queue's length, the place its handle would have had, where
 * run_once runs it (run_batch).  In debug mode (never the case when the C
 * turn runs, unless the turn itself switched it on) the loop's own method
 * schedules it.  0, 1 when the loop's method ran, or -1 with an error. */
static int
defer_batch(PyObject *loop, PyObject *turn, PyObject *batch, PyObject *unfinished,
            int *debug_read, PyObject **pending, Py_ssize_t *position)
{
    int debug = loop_attr_true(loop, LOOP_DEBUG);
    if (debug < 0)
        return -1;
    *debug_read = debug;
    if (debug) {
        PyObject *deferred = PyObject_CallFunctionObjArgs(PyTuple_GetItem(turn, TURN_DEFER),
                                                          batch, NULL);
        Py_XDECREF(deferred);
        return deferred == NULL ? -1 : 1;
    }
    *position = PyObject_Size(PyTuple_GetItem(turn, TURN_READY));
    if (*position < 0)
        return -1;
    *pending = PyTuple_Pack(4, PyTuple_GetItem(turn, TURN_RING), PyTuple_GetItem(turn, TURN_OPS),
                            unfinished, batch);
    return *pending == NULL ? -1 : 0;
}

/* Run a batch defer_batch left pending, as the handle it would have had
 * runs: run_callbacks(*args), an exception reported as Handle._run reports
 * it (through a handle made for the report), through the debug runner in
 * debug mode.  Unlike that handle's callback, the batch runs in no copy
 * of the context: every completion callback that runs user code gives it
 * a context of its own (the transport's, or a copy around a report to the
 * exception handler), so the copy kept nothing apart, and with the call
 * through Context.run it cost ~600 instructions a turn.  ``debug`` as for
 * run_handle.  0, or -1 with an error. */
static int
run_batch(PyObject *loop, PyObject *args, int debug)
{
    if (debug < 0 && (debug = loop_attr_true(loop, LOOP_DEBUG)) < 0)
        return -1;
    /* From the module's dict, where a test's patch would put it (module
     * getattr costs ~250 instructions more a turn). */
    PyObject *run = PyDict_GetItemWithError(PyModule_GetDict(this_module), s_run_callbacks);
    if (run == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "_speedups.run_callbacks is gone");
        return -1;
    }
    Py_INCREF(run);
    int rc = -1;
    PyObject *handle = NULL, *result = NULL;
    if (debug) {
        handle = new_handle_object(run, args, loop, Py_None);
        result = handle ? PyObject_CallFunctionObjArgs(debug_run, loop, handle, NULL) : NULL;
        rc = result == NULL ? -1 : 0;
        goto done;
    }
    PyObject *argv[4] = {PyTuple_GetItem(args, 0), PyTuple_GetItem(args, 1),
                         PyTuple_GetItem(args, 2), PyTuple_GetItem(args, 3)};
    if (run == stock_run_callbacks)
        result = run_callbacks(NULL, argv, 4);
    else
        result = PyObject_CallFunctionObjArgs(run, argv[0], argv[1], argv[2], argv[3], NULL);
    if (result != NULL) {
        rc = 0;
    } else if (!PyErr_ExceptionMatches(PyExc_SystemExit) &&
               !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        /* The handle the report names (the exception stays pending). */
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        handle = new_handle_object(run, args, loop, Py_None);
        PyErr_Restore(type, value, traceback);
        if (handle != NULL)
            rc = report_callback_error(handle);
    }
done:
    Py_XDECREF(result);
    Py_XDECREF(handle);
    Py_DECREF(run);
    return rc;
}

/* Step 3 on the ring, without RingSelector.select and Ring.run_turn when
 * nothing but a plain ring turn is needed: select()'s result (a new
 * reference), NULL with an error, or NULL without one when the loop must
 * take the Python path (selector.select). */
static PyObject *
ring_select(PyObject *loop, PyObject *timeout, int *skip_events, int *debug_read,
            PyObject **pending, Py_ssize_t *position)
{
    if (ring_turn == NULL)
        return NULL;
    PyObject *turn = loop_attr(loop, LOOP_C_RING_TURN);
    if (turn == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        return NULL;
    }
    PyObject *result = NULL, *unfinished_ref = NULL, *signalled = NULL;
    if (!PyTuple_Check(turn) || PyTuple_Size(turn) != TURN_SIZE)
        goto done;   /* None: closed, or no C turn for this loop */
    PyObject *state_obj = PyTuple_GetItem(turn, TURN_STATE);
    if (Py_TYPE(state_obj) != (PyTypeObject *)turn_state_type)
        goto done;
    TurnState *state = (TurnState *)state_obj;
    if (state->ring == NULL)
        goto done;   /* closed: the ring is closed or the parent's */
    /* Held: the state is only borrowed while the GIL is released. */
    PyObject *unfinished = state->unfinished;
    unfinished_ref = Py_NewRef(unfinished);
    if (PySet_Size(PyTuple_GetItem(turn, TURN_TO_ARM)) != 0 ||
            PyDict_Size(PyTuple_GetItem(turn, TURN_FIRED)) != 0 ||
            PyList_Size(unfinished) != 0)
        goto done;   /* polls to arm, events or batches left: select() does it all */
    if (!state->bound || state->thread != PyThread_get_thread_ident())
        goto done;   /* not bound to this thread yet: run_turn binds it */
    struct ul_ring *ring = state->ring;
    struct ul_completion *out = state->out;
    unsigned *inline_count = state->inline_count;
    long batch_size = state->batch_size;
    long long timeout_ns = -1;
    if (timeout != Py_None) {
        double seconds = PyFloat_AsDouble(timeout);
        if (seconds == -1.0 && PyErr_Occurred())
            goto done;
        /* Ring.run_turn's max(0, int(timeout * 1e9)) */
        double ns = seconds * 1e9;
        timeout_ns = ns > 0 ? (long long)ns : 0;
    }
    /* The GIL stays held here: ffi.addressof(lib, "ul_ring_turn") is cffi's
     * direct-call wrapper, which goes through the GIL-releasing version
     * build_ffi.py's PRELUDE puts in the name's place. */
    int count = ring_turn(ring, timeout_ns, out, (unsigned)batch_size, inline_count);
    /* The Python handlers of signals that arrived meanwhile run now, before
     * any callback, as asyncio's select() runs them (PEP 475): one that
     * raises (KeyboardInterrupt, a test timeout) stops the loop here, not
     * inside a callback or a task.  Its exception leaves the turn once what
     * was reaped is kept for the next turn (ring._unfinished), so that no
     * operation loses its completion. */
    if (PyErr_CheckSignals() < 0)
        signalled = ul_take_exception();
    PyObject *defer = PyTuple_GetItem(turn, TURN_DEFER);
    PyObject *ring_obj = PyTuple_GetItem(turn, TURN_RING);
    if (count < 0 || *inline_count != 0 || count >= batch_size) {
        /* Polls, an error or a full batch: Ring.take_turn's full rules. */
        PyObject *count_obj = PyLong_FromLong(count);
        if (count_obj == NULL)
            goto done;
        PyObject *over = PyObject_CallMethodObjArgs(ring_obj, s_take_turn, count_obj,
                                                    defer, NULL);
        Py_DECREF(count_obj);
        if (over == NULL)
            goto done;
        int finished = PyObject_IsTrue(over);
        Py_DECREF(over);
        if (finished < 0)
            goto done;
        if (!finished) {
            PyObject *zero = PyLong_FromLong(0);
            PyObject *more = zero == NULL ? NULL :
                PyObject_CallMethodObjArgs(ring_obj, s_run_turn, zero, defer, NULL);
            Py_XDECREF(zero);
            if (more == NULL)
                goto done;
            Py_DECREF(more);
        }
        result = PyObject_CallMethodObjArgs(PyTuple_GetItem(turn, TURN_SELECTOR),
                                            s_fired_events, NULL);
        goto done;
    }
    int deferred = 0;
    if (count > 0) {
        PyObject *batch = completion_batch(out, count);
        if (batch == NULL)
            goto done;
        deferred = PyList_Append(unfinished, batch) == 0 ?
            defer_batch(loop, turn, batch, unfinished, debug_read, pending, position) : -1;
        Py_DECREF(batch);
        if (deferred < 0)
            goto done;
    }
    result = PyList_New(0);
    /* No events: asyncio's _process_events would do nothing.  The loop
     * said when it was made whether its class has asyncio's (looking it
     * up on a class this deep every turn cost ~250 instructions, and
     * ~2,600 whenever the lookup missed the type attribute cache). */
    *skip_events = PyTuple_GetItem(turn, TURN_STOCK_EVENTS) == Py_True && deferred == 0;
done:
    if (signalled != NULL) {
        Py_CLEAR(result);
        if (PyErr_Occurred())
            PyException_SetContext(signalled, ul_take_exception());
        ul_restore_exception(signalled);
    }
    Py_XDECREF(unfinished_ref);
    Py_DECREF(turn);
    return result;
}

static PyObject *
run_once(PyObject *module, PyObject *loop)
{
    (void)module;
    if (context_run == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "uringloop._speedups is not configured");
        return NULL;
    }
    /* A batch deferred without a handle, and the place in the ready
     * queue it takes (see defer_batch).  Should the turn end before it
     * ran, it stays in ring._unfinished, which the next turn runs first. */
    PyObject *pending = NULL;
    Py_ssize_t position = 0;
    PyObject *ready = loop_attr(loop, LOOP_READY);
    if (ready == NULL)
        return NULL;
    PyObject *heap = drop_cancelled_timers(loop);
    PyObject *timeout = heap ? select_timeout(loop, ready, heap) : NULL;
    if (timeout == NULL) {
        Py_XDECREF(heap);
        goto fail;
    }

    int skip = 0, debug = -1;
    PyObject *events = ring_select(loop, timeout, &skip, &debug, &pending, &position);
    /* Set by ring_select only when it ran no Python code (a plain ring
     * turn, the batch deferred in C) and _process_events is asyncio's. */
    int c_only = skip;
    if (events == NULL && !PyErr_Occurred()) {
        PyObject *selector = loop_attr(loop, LOOP_SELECTOR);
        if (selector != NULL) {
            events = PyObject_CallMethodObjArgs(selector, s_select, timeout, NULL);
            Py_DECREF(selector);
        }
    }
    Py_DECREF(timeout);
    if (events == NULL) {
        Py_DECREF(heap);
        goto fail;
    }
    if (!skip && PyList_CheckExact(events) && PyList_Size(events) == 0) {
        PyObject *method = PyObject_GetAttr((PyObject *)Py_TYPE(loop), s_process_events);
        if (method == NULL) {
            Py_DECREF(events);
            Py_DECREF(heap);
            goto fail;
        }
        skip = method == stock_process_events;
        Py_DECREF(method);
    }
    if (!skip) {
        PyObject *processed = PyObject_CallMethodObjArgs(loop, s_process_events, events, NULL);
        if (processed == NULL) {
            Py_DECREF(events);
            Py_DECREF(heap);
            goto fail;
        }
        Py_DECREF(processed);
    }
    Py_DECREF(events);

    /* Due timers mean loop.time() ran (Python): loop._debug is read again. */
    if (!c_only || PyList_Size(heap) != 0)
        debug = -1;
    int moved = move_due_timers(loop, ready, c_only ? heap : NULL);
    Py_DECREF(heap);
    if (moved < 0)
        goto fail;

    Py_ssize_t todo = PyObject_Size(ready), popped = 0;
    if (todo < 0)
        goto fail;
    for (todo += pending != NULL; todo > 0; todo--) {
        if (pending != NULL && popped == position) {
            int rc = run_batch(loop, pending, debug);
            Py_CLEAR(pending);
            debug = -1;
            if (rc < 0)
                goto fail;
            continue;
        }
        popped++;
        PyObject *handle = PyObject_CallMethodObjArgs(ready, s_popleft, NULL);
        if (handle == NULL)
            goto fail;
        int known = known_handle(handle);
        PyObject *cancelled_obj = handle_attr(handle, SLOT_CANCELLED, s_cancelled, known);
        int cancelled = cancelled_obj == NULL ? -1 : cancelled_obj == Py_True ? 1 :
            cancelled_obj == Py_False ? 0 : PyObject_IsTrue(cancelled_obj);
        Py_XDECREF(cancelled_obj);
        int rc = cancelled ? cancelled : run_handle(loop, handle, known, debug);
        debug = -1;   /* the callback may have switched debug mode on */
        Py_DECREF(handle);
        if (rc < 0)
            goto fail;
    }
    Py_DECREF(ready);
    UL_RETURN_NONE;
fail:
    Py_XDECREF(pending);
    Py_DECREF(ready);
    return NULL;
}

/* -- the loop's _run_once ------------------------------------------------ */

/* turn_class(reference, handle_class, accel) makes a subclass of
 * ``reference`` (_turn.TurnMixin) whose _run_once is the reference's in C
 * for its plain case: the accelerator selected (accel.speedups is this
 * module), no sock_* op in flight, not in debug mode and handle_class._run
 * as it was when the class was made.  Every other turn runs the reference
 * method, which decides as before.  It spares each turn the reference's
 * Python frame (~1,100 instructions). */
static PyObject *turn_reference;     /* reference._run_once */
static PyObject *turn_handle_class;  /* asyncio.events.Handle */
static PyObject *stock_handle_run;   /* its _run when turn_class was called */
static PyObject *accel_module;       /* uringloop._accel */

static int
turn_is_plain(PyObject *loop)
{
    PyObject *selected = PyDict_GetItemWithError(PyModule_GetDict(accel_module), s_speedups);
    if (selected != this_module)
        return PyErr_Occurred() ? -1 : 0;
    int busy = loop_attr_true(loop, LOOP_SOCK_OPS);
    if (busy != 0)
        return busy < 0 ? -1 : 0;
    int debug = loop_attr_true(loop, LOOP_DEBUG);
    if (debug != 0)
        return debug < 0 ? -1 : 0;
    PyObject *run = PyObject_GetAttr(turn_handle_class, s_run);
    if (run == NULL)
        return -1;
    Py_DECREF(run);
    return run == stock_handle_run;
}

static PyObject *
turn_run_once(PyObject *loop, PyObject *unused)
{
    (void)unused;
    int plain = turn_is_plain(loop);
    if (plain < 0)
        return NULL;
    if (!plain)
        return PyObject_CallFunctionObjArgs(turn_reference, loop, NULL);
    return run_once(NULL, loop);
}

static PyMethodDef turn_methods[] = {
    {"_run_once", turn_run_once, METH_NOARGS,
     "_run_once($self, /)\n--\n\nTurnMixin._run_once, its plain case in C."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot turn_slots[] = {
    {Py_tp_methods, turn_methods},
    {Py_tp_doc, "The loop's _run_once in C (csrc/speedups.c)."},
    {0, NULL},
};

static PyType_Spec turn_spec = {
    "uringloop._speedups.TurnMixin", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, turn_slots,
};

static PyObject *
turn_class(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3 || !PyType_Check(args[0]) || !PyType_Check(args[1]) ||
            !PyModule_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "turn_class(reference, handle_class, accel_module)");
        return NULL;
    }
    PyObject *reference = PyObject_GetAttr(args[0], s_run_once);
    PyObject *handle_run = reference ? PyObject_GetAttr(args[1], s_run) : NULL;
    Py_ssize_t offsets[LOOP_FIELD_COUNT];
    PyObject *type = handle_run ?
        ul_subclass(&turn_spec, args[0], loop_field_names, LOOP_FIELD_COUNT, offsets) : NULL;
    if (type == NULL) {
        Py_XDECREF(reference);
        Py_XDECREF(handle_run);
        return NULL;
    }
    memcpy(loop_field_offset, offsets, sizeof(offsets));
    Py_XDECREF(turn_type);
    turn_type = Py_NewRef(type);
    Py_CLEAR(loop_check.type);   /* its answer was about the previous class */
    Py_XDECREF(turn_reference);
    turn_reference = reference;
    Py_XDECREF(stock_handle_run);
    stock_handle_run = handle_run;
    Py_XDECREF(turn_handle_class);
    turn_handle_class = Py_NewRef(args[1]);
    Py_XDECREF(accel_module);
    accel_module = Py_NewRef(args[2]);
    return type;
}

/* -- the loop's call_soon -------------------------------------------------- */

/* scheduling_class(reference) makes a subclass of ``reference``
 * (_scheduling.LeanSchedulingMixin) whose call_soon is the reference's in C
 * for its plain case: at most the ``context`` keyword, the loop neither in
 * debug mode nor closed.  The handle is new_handle_object's (the
 * reference's _new_handle) appended to loop._ready.  Every other call goes
 * to the reference, which raises asyncio's errors.  Every task wakeup and
 * future callback is a call_soon: the reference's frame, with the keyword
 * dict a call from C builds, cost ~2,500 instructions. */
static PyObject *call_soon_reference;   /* reference.call_soon */

/* The last "context" keyword name that was not the interned one: the
 * C Task's call_soon(..., context=...) passes its own string object, which
 * compared by value cost ~95 instructions a call. */
static PyObject *seen_context_keyword;

static PyObject *
loop_call_soon(PyObject *loop, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *context = Py_None;
    int plain = nargs >= 1;
    if (plain && kwnames != NULL && PyTuple_Size(kwnames) != 0) {
        PyObject *name = PyTuple_GetItem(kwnames, 0);
        plain = PyTuple_Size(kwnames) == 1 &&
            (name == s_context_keyword || name == seen_context_keyword ||
             PyUnicode_Compare(name, s_context_keyword) == 0);
        if (plain) {
            context = args[nargs];
            if (name != s_context_keyword && name != seen_context_keyword) {
                PyObject *before = seen_context_keyword;
                seen_context_keyword = Py_NewRef(name);
                Py_XDECREF(before);
            }
        } else if (PyErr_Occurred()) {
            return NULL;
        }
    }
    if (plain) {
        int debug = loop_attr_true(loop, LOOP_DEBUG);
        int closed = debug == 0 ? loop_attr_true(loop, LOOP_CLOSED) : 0;
        if (debug < 0 || closed < 0)
            return NULL;
        plain = !debug && !closed;
    }
    if (!plain)
        return ul_call_with_self(call_soon_reference, loop, args, nargs, kwnames);
    PyObject *callback_args = PyTuple_New(nargs - 1);
    if (callback_args == NULL)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SetItem(callback_args, i - 1, Py_NewRef(args[i]));
    PyObject *handle = new_handle_object(args[0], callback_args, loop, context);
    Py_DECREF(callback_args);
    PyObject *ready = handle ? loop_attr(loop, LOOP_READY) : NULL;
    PyObject *appended = ready ? PyObject_CallMethodObjArgs(ready, s_append, handle, NULL) : NULL;
    Py_XDECREF(ready);
    if (appended == NULL) {
        Py_XDECREF(handle);
        return NULL;
    }
    Py_DECREF(appended);
    return handle;
}

static PyMethodDef scheduling_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, METH_FASTCALL | METH_KEYWORDS,
     "call_soon($self, callback, *args, context=None)\n--\n\n"
     "LeanSchedulingMixin.call_soon, its plain case in C."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot scheduling_slots[] = {
    {Py_tp_methods, scheduling_methods},
    {Py_tp_doc, "The loop's call_soon in C (csrc/speedups.c)."},
    {0, NULL},
};

static PyType_Spec scheduling_spec = {
    "uringloop._speedups.LeanSchedulingMixin", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    scheduling_slots,
};

static PyObject *
scheduling_class(PyObject *module, PyObject *reference)
{
    (void)module;
    if (!PyType_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "scheduling_class(reference): a class");
        return NULL;
    }
    PyObject *call_soon = PyObject_GetAttrString(reference, "call_soon");
    PyObject *type = call_soon ? ul_subclass(&scheduling_spec, reference, NULL, 0, NULL) : NULL;
    if (type == NULL) {
        Py_XDECREF(call_soon);
        return NULL;
    }
    Py_XDECREF(call_soon_reference);
    call_soon_reference = call_soon;
    return type;
}

static PyObject *
configure(PyObject *module, PyObject *args, PyObject *kwargs)
{
    (void)module;
    static char *keywords[] = {"report_error", "debug_run", "handle_types",
                               "max_timeout", "process_events", "ring_turn", "sendq_write",
                               "lean_handle", NULL};
    PyObject *report, *debug, *types, *process_events, *ring_turn_address;
    PyObject *sendq_write_address = Py_None, *lean_handle = NULL;
    double timeout;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO!dOO|OO!:configure", keywords,
                                     &report, &debug, &PyTuple_Type, &types, &timeout,
                                     &process_events, &ring_turn_address,
                                     &sendq_write_address, &PyType_Type, &lean_handle))
        return NULL;
    void *ring_turn_pointer = NULL, *sendq_write_pointer = NULL;
    if (ring_turn_address != Py_None) {
        ring_turn_pointer = PyLong_AsVoidPtr(ring_turn_address);
        if (ring_turn_pointer == NULL && PyErr_Occurred())
            return NULL;
    }
    if (sendq_write_address != Py_None) {
        sendq_write_pointer = PyLong_AsVoidPtr(sendq_write_address);
        if (sendq_write_pointer == NULL && PyErr_Occurred())
            return NULL;
    }
    PyObject *contextvars = PyImport_ImportModule("contextvars");
    if (contextvars == NULL)
        return NULL;
    PyObject *context = PyObject_GetAttrString(contextvars, "Context");
    PyObject *copy = context ? PyObject_GetAttrString(contextvars, "copy_context") : NULL;
    Py_DECREF(contextvars);
    if (copy == NULL) {
        Py_XDECREF(context);
        return NULL;
    }
    if (PyTuple_Size(types) > MAX_HANDLE_TYPES) {
        Py_DECREF(context);
        Py_DECREF(copy);
        PyErr_SetString(PyExc_ValueError, "too many handle types");
        return NULL;
    }
    PyObject *run = PyObject_GetAttrString(context, "run");
    if (run == NULL) {
        Py_DECREF(context);
        Py_DECREF(copy);
        return NULL;
    }
    if (lean_handle != NULL) {
        /* The slots' own descriptors, which the C class's fields hide. */
        PyObject *slot_owner = lean_handle == c_handle_type ? c_handle_reference : lean_handle;
        PyObject *slots[HANDLE_SLOTS];
        descrsetfunc setters[HANDLE_SLOTS];
        descrgetfunc getters[HANDLE_SLOTS];
        int i;
        for (i = 0; i < HANDLE_SLOTS; i++) {
            slots[i] = ul_slot_descriptor(slot_owner, handle_slot_names[i], &getters[i],
                                          &setters[i]);
            if (slots[i] == NULL)
                break;
        }
        if (i < HANDLE_SLOTS) {
            while (i-- > 0)
                Py_DECREF(slots[i]);
            Py_DECREF(context);
            Py_DECREF(copy);
            Py_DECREF(run);
            return NULL;
        }
        for (i = 0; i < HANDLE_SLOTS; i++) {
            Py_XDECREF(handle_slots[i]);
            handle_slots[i] = slots[i];
            handle_slot_set[i] = setters[i];
            handle_slot_get[i] = getters[i];
        }
        Py_XDECREF(lean_handle_type);
        lean_handle_type = Py_NewRef(lean_handle);
    }
    Py_XDECREF(copy_context);
    copy_context = copy;
    Py_XDECREF(context_type);
    context_type = context;
    Py_XDECREF(context_run);
    context_run = run;
    Py_XDECREF(report_error);
    report_error = Py_NewRef(report);
    Py_XDECREF(debug_run);
    debug_run = Py_NewRef(debug);
    Py_XDECREF(handle_types);
    handle_types = Py_NewRef(types);
    handle_type_count = PyTuple_Size(types);
    for (Py_ssize_t i = 0; i < handle_type_count; i++)
        handle_type_list[i] = PyTuple_GetItem(types, i);
    Py_XDECREF(stock_process_events);
    stock_process_events = Py_NewRef(process_events);
    max_timeout = timeout;
    ring_turn = (ring_turn_fn *)ring_turn_pointer;
    ul_speedups_sendq_write = (sendq_write_fn *)sendq_write_pointer;
    UL_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"run_once", run_once, METH_O,
     "run_once(loop): one iteration of asyncio's _run_once outside debug mode."},
    {"heap_push", (PyCFunction)(void (*)(void))heap_push, METH_FASTCALL,
     "heap_push(heap, timer): heapq.heappush for timer handles."},
    {"heap_pop", heap_pop, METH_O, "heap_pop(heap): heapq.heappop for timer handles."},
    {"run_callbacks", (PyCFunction)(void (*)(void))run_callbacks, METH_FASTCALL,
     "run_callbacks(ring, ring._ops, ring._unfinished, batch): Ring.run_callbacks in C."},
    {"new_handle", (PyCFunction)(void (*)(void))new_handle, METH_FASTCALL,
     "new_handle(callback, args, loop, context): uringloop._scheduling.Handle(...)\n"
     "without its __init__ frame."},
    {"receive_bytes", (PyCFunction)(void (*)(void))receive_bytes, METH_FASTCALL,
     "receive_bytes(base, count, size, flags, nbytes): Ring.receive_buffer in C."},
    {"sendq_write", (PyCFunction)(void (*)(void))sendq_write, METH_FASTCALL,
     "sendq_write(queue, bytes, nbytes): lib.ul_sendq_write without cffi."},
    {"turn_class", (PyCFunction)(void (*)(void))turn_class, METH_FASTCALL,
     "turn_class(reference, handle_class, accel_module): a subclass of the loop's\n"
     "reference _run_once with its plain case in C."},
    {"scheduling_class", scheduling_class, METH_O,
     "scheduling_class(reference): a subclass of the loop's reference call_soon\n"
     "with its plain case in C."},
    {"handle_class", handle_class, METH_O,
     "handle_class(reference): a subclass of the lean handle whose slots are\n"
     "fields new_handle and the turn reach directly."},
    {"callback_class", callback_class, METH_O,
     "callback_class(reference): a subclass of the ring callback entry whose\n"
     "on_completion run_callbacks reads directly."},
    {"stream_class", ul_stream_class, METH_O,
     "stream_class(reference): a subclass of the stream transport's reference\n"
     "per-message methods with their plain cases in C (csrc/stream_speedups.c)."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(report_error, debug_run, handle_types, max_timeout, process_events,\n"
     "          ring_turn, sendq_write=None, lean_handle=None): ring_turn and\n"
     "sendq_write are the addresses of ul_ring_turn and ul_sendq_write (or None),\n"
     "lean_handle the class new_handle makes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The loop turn, the timer heap and completion dispatch in C (see uringloop/_turn.py).",
    -1, methods,
    NULL, NULL, NULL, NULL,
};

PyObject *
ul_subclass(PyType_Spec *spec, PyObject *reference, const char *const *field_names,
            int field_count, Py_ssize_t *field_offsets)
{
    PyObject *size_obj = PyObject_GetAttrString(reference, "__basicsize__");
    Py_ssize_t base_size = size_obj == NULL ? -1 : PyLong_AsSsize_t(size_obj);
    Py_XDECREF(size_obj);
    if (base_size < 0)
        return NULL;
    int spec_slots = 0;
    while (spec->slots[spec_slots].slot != 0)
        spec_slots++;
    /* PyType_FromSpecWithBases copies both tables into the new type. */
    PyMemberDef *members = PyMem_Calloc((size_t)field_count + 1, sizeof(*members));
    PyType_Slot *slots = PyMem_Calloc((size_t)spec_slots + 2, sizeof(*slots));
    PyObject *bases = members && slots ? PyTuple_Pack(1, reference) : NULL;
    PyObject *type = NULL;
    if (bases != NULL) {
        for (int i = 0; i < field_count; i++) {
            field_offsets[i] = base_size + i * (Py_ssize_t)sizeof(PyObject *);
            members[i] = (PyMemberDef){field_names[i], T_OBJECT_EX, field_offsets[i], 0, NULL};
        }
        memcpy(slots, spec->slots, (size_t)spec_slots * sizeof(*slots));
        if (field_count > 0)
            slots[spec_slots] = (PyType_Slot){Py_tp_members, members};
        PyType_Spec with_fields = *spec;
        with_fields.basicsize = (int)(base_size + field_count * (Py_ssize_t)sizeof(PyObject *));
        with_fields.slots = slots;
        type = PyType_FromSpecWithBases(&with_fields, bases);
    } else if (!PyErr_Occurred()) {
        PyErr_NoMemory();
    }
    Py_XDECREF(bases);
    PyMem_Free(members);
    PyMem_Free(slots);
    return type;
}

int
ul_fields_reach_checked(struct ul_field_check *check, PyTypeObject *type, PyObject *owner,
                        const char *const *field_names, int field_count)
{
    int reached = PyType_IsSubtype(type, (PyTypeObject *)owner) &&
        PyType_GetSlot(type, Py_tp_getattro) == (void *)PyObject_GenericGetAttr;
    for (int i = 0; reached && i < field_count; i++) {
        PyObject *found = PyObject_GetAttrString((PyObject *)type, field_names[i]);
        PyObject *own = found ? PyObject_GetAttrString(owner, field_names[i]) : NULL;
        reached = found != NULL && found == own;
        Py_XDECREF(found);
        Py_XDECREF(own);
        if (PyErr_Occurred())
            return -1;
    }
    Py_XDECREF(check->type);
    check->type = Py_NewRef((PyObject *)type);
    check->reached = reached;
    return reached;
}

PyObject *
ul_call_with_self(PyObject *func, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_Size(kwnames);
    PyObject *call = PyTuple_New(nargs + 1);
    PyObject *kwargs = call != NULL && nkw ? PyDict_New() : NULL;
    if (call == NULL || (nkw && kwargs == NULL)) {
        Py_XDECREF(call);
        return NULL;
    }
    PyTuple_SetItem(call, 0, Py_NewRef(self));
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SetItem(call, i + 1, Py_NewRef(args[i]));
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(kwargs, PyTuple_GetItem(kwnames, i), args[nargs + i]) < 0) {
            Py_DECREF(call);
            Py_DECREF(kwargs);
            return NULL;
        }
    }
    PyObject *result = PyObject_Call(func, call, kwargs);
    Py_DECREF(call);
    Py_XDECREF(kwargs);
    return result;
}

int
ul_intern_names(const struct ul_name *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (*names[i].slot == NULL &&
                (*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
    }
    return 0;
}

PyObject *
ul_slot_descriptor(PyObject *type, const char *name, descrgetfunc *get, descrsetfunc *set)
{
    PyObject *descriptor = PyObject_GetAttrString(type, name);
    if (descriptor == NULL)
        return NULL;
    *get = (descrgetfunc)PyType_GetSlot(Py_TYPE(descriptor), Py_tp_descr_get);
    *set = (descrsetfunc)PyType_GetSlot(Py_TYPE(descriptor), Py_tp_descr_set);
    if (*get == NULL || *set == NULL) {
        PyErr_Format(PyExc_TypeError, "%R.%s is not a slot", type, name);
        Py_DECREF(descriptor);
        return NULL;
    }
    return descriptor;
}

static int
intern_names(void)
{
    static const struct ul_name names[] = {
        {&s_when, "_when"}, {&s_cancelled, "_cancelled"}, {&s_scheduled, "_scheduled"},
        {&s_timer_cancelled_count, "_timer_cancelled_count"}, {&s_ready, "_ready"},
        {&s_stopping, "_stopping"}, {&s_time, "time"}, {&s_selector, "_selector"},
        {&s_select, "select"}, {&s_process_events, "_process_events"},
        {&s_clock_resolution, "_clock_resolution"}, {&s_popleft, "popleft"},
        {&s_append, "append"}, {&s_context, "_context"}, {&s_callback, "_callback"},
        {&s_args, "_args"}, {&s_debug, "_debug"}, {&s_run, "_run"},
        {&s_c_ring_turn, "_c_ring_turn"}, {&s_take_turn, "take_turn"},
        {&s_fired_events, "fired_events"}, {&s_run_turn, "run_turn"},
        {&s_context_run, "run"}, {&s_on_completion, "on_completion"},
        {&s_on_callback_error, "on_callback_error"}, {&s_loop, "_loop"},
        {&s_repr, "_repr"}, {&s_source_traceback, "_source_traceback"},
        {&s_run_callbacks, "run_callbacks"}, {&s_sock_ops, "_sock_ops"},
        {&s_run_once, "_run_once"}, {&s_speedups, "speedups"}, {&s_closed, "_closed"},
        {&s_context_keyword, "context"},
    };
    return ul_intern_names(names, sizeof(names) / sizeof(names[0]));
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern_names() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (batch_type == NULL && (batch_type = PyType_FromSpec(&batch_spec)) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Batch", batch_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (turn_state_type == NULL &&
            (turn_state_type = PyType_FromSpec(&turn_state_spec)) == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "TurnState", turn_state_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    Py_XDECREF(this_module);
    this_module = Py_NewRef(module);
    Py_XDECREF(stock_run_callbacks);
    stock_run_callbacks = Py_XNewRef(PyDict_GetItemWithError(PyModule_GetDict(module),
                                                             s_run_callbacks));
    return module;
}
