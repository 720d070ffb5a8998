/* Word filters over a block of LF-terminated lines, in one pass of compiled code.
 *
 * A route's filter made only of words (`(ERROR || WARN) && (user || auth)`) would cost the
 * Python path several searches of the block plus mapping every find to its line. Here each
 * line is looked at once: the expression is evaluated on it with short-circuit, and each word
 * is searched with SSE2 (16 candidate positions per compare: first and last byte of the word,
 * then a memcmp of the middle), so a filter costs tens of nanoseconds per line.
 *
 * match_lines(block, program) -> list[int]
 *     The indices of the lines the program matches, ascending. `program` is a tree of tuples:
 *     (0, word: bytes) | (1, (terms...)) for && | (2, (terms...)) for || | (3, term) for !.
 *     A word matches a line that contains it (a word holding a LF matches none; an empty
 *     word matches every line). Bytes after the last LF are not a line.
 * pick_lines(block, indices) -> bytes
 *     The lines at `indices` (ascending), each with its LF, joined.
 *
 * logd.linescan holds the same in Python, for where this was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1
#else
#define HAVE_SSE2 0
#endif

enum { OP_WORD = 0, OP_AND = 1, OP_OR = 2, OP_NOT = 3 };

/* Nesting is bounded by the filter syntax (64 levels of parentheses and negations, plus
 * the && / || levels between them); this bound keeps a hand-made program from exhausting
 * the C stack. */
#define MAX_NESTING 512

typedef struct {
    int op;
    int first;   /* OP_AND / OP_OR: index of the first term in `terms`; OP_NOT: the term */
    int count;   /* OP_AND / OP_OR: number of terms */
    const char *word;
    Py_ssize_t len;
#if HAVE_SSE2
    __m128i head, tail;  /* the word's first and last byte in every lane */
#endif
} Node;

typedef struct {
    Node *nodes;
    int *terms;
    int n_nodes, n_terms, cap_nodes, cap_terms;
} Program;

static int
program_grow(Program *p)
{
    if (p->n_nodes < p->cap_nodes) {
        return 0;
    }
    if (p->cap_nodes > INT_MAX / 2) {
        PyErr_NoMemory();
        return -1;
    }
    int cap = p->cap_nodes ? p->cap_nodes * 2 : 16;
    Node *nodes = PyMem_Realloc(p->nodes, (size_t)cap * sizeof(Node));
    if (nodes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->nodes = nodes;
    p->cap_nodes = cap;
    return 0;
}

static int
terms_reserve(Program *p, int more)
{
    if (more > INT_MAX / 2 - p->n_terms) {
        PyErr_NoMemory();
        return -1;
    }
    if (p->n_terms + more <= p->cap_terms) {
        return 0;
    }
    int cap = p->cap_terms ? p->cap_terms : 16;
    while (cap < p->n_terms + more) {
        cap *= 2;
    }
    int *terms = PyMem_Realloc(p->terms, (size_t)cap * sizeof(int));
    if (terms == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->terms = terms;
    p->cap_terms = cap;
    return 0;
}

/* Adds the node for `obj` (and its terms) to the program; returns its index, or -1 with an
 * exception set. The words' bytes are borrowed from `obj`, which outlives the call. */
static int
compile_node(Program *p, PyObject *obj, int depth)
{
    if (depth > MAX_NESTING) {
        PyErr_SetString(PyExc_ValueError, "program nested too deeply");
        return -1;
    }
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 2) {
        PyErr_SetString(PyExc_TypeError, "a program node is a tuple (op, operand)");
        return -1;
    }
    long op = PyLong_AsLong(PyTuple_GET_ITEM(obj, 0));
    if (op == -1 && PyErr_Occurred()) {
        return -1;
    }
    PyObject *arg = PyTuple_GET_ITEM(obj, 1);
    if (program_grow(p) < 0) {
        return -1;
    }
    int idx = p->n_nodes++;
    Node node;
    memset(&node, 0, sizeof node);
    node.op = (int)op;
    switch (op) {
    case OP_WORD: {
        if (!PyBytes_Check(arg)) {
            PyErr_SetString(PyExc_TypeError, "a word is bytes");
            return -1;
        }
        node.word = PyBytes_AS_STRING(arg);
        node.len = PyBytes_GET_SIZE(arg);
#if HAVE_SSE2
        if (node.len > 0) {
            node.head = _mm_set1_epi8(node.word[0]);
            node.tail = _mm_set1_epi8(node.word[node.len - 1]);
        }
#endif
        break;
    }
    case OP_AND:
    case OP_OR: {
        if (!PyTuple_Check(arg)) {
            PyErr_SetString(PyExc_TypeError, "the terms of && and || are a tuple");
            return -1;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(arg);
        if (n > INT_MAX / 2) {
            PyErr_SetString(PyExc_ValueError, "too many terms");
            return -1;
        }
        /* The terms' indices are stored together; compiling a term may add its own terms,
         * so this node's slots are reserved first. */
        if (terms_reserve(p, (int)n) < 0) {
            return -1;
        }
        int first = p->n_terms;
        p->n_terms += (int)n;
        for (Py_ssize_t i = 0; i < n; i++) {
            int t = compile_node(p, PyTuple_GET_ITEM(arg, i), depth + 1);
            if (t < 0) {
                return -1;
            }
            p->terms[first + i] = t;
        }
        node.first = first;
        node.count = (int)n;
        break;
    }
    case OP_NOT: {
        int t = compile_node(p, arg, depth + 1);
        if (t < 0) {
            return -1;
        }
        node.first = t;
        break;
    }
    default:
        PyErr_Format(PyExc_ValueError, "unknown program op %ld", op);
        return -1;
    }
    p->nodes[idx] = node;
    return idx;
}

static void
program_free(Program *p)
{
    PyMem_Free(p->nodes);
    PyMem_Free(p->terms);
}

/* Whether line[0:n) contains the word. `end` is the end of the block: bytes up to it may
 * be read past the line (the next lines), never beyond. */
static inline int
contains(const Node *w, const char *line, Py_ssize_t n, const char *end)
{
    Py_ssize_t k = w->len;
    if (k == 0) {
        return 1;
    }
    if (k > n) {
        return 0;
    }
    const char *word = w->word;
    if (k == 1) {
        return memchr(line, word[0], (size_t)n) != NULL;
    }
    Py_ssize_t last = n - k;  /* the last position the word can start at */
    Py_ssize_t i = 0;
#if HAVE_SSE2
    Py_ssize_t room = end - line;  /* bytes readable from `line` (compared as lengths: a
                                      pointer past the block is undefined even unread) */
    while (i <= last && i + k - 1 + 16 <= room) {
        __m128i a = _mm_loadu_si128((const __m128i *)(line + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(line + i + k - 1));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(a, w->head), _mm_cmpeq_epi8(b, w->tail)));
        if (last - i < 15) {
            m &= (1u << (last - i + 1)) - 1;  /* positions past the line's end */
        }
        while (m) {
            int bit = __builtin_ctz(m);
            if (memcmp(line + i + bit + 1, word + 1, (size_t)(k - 2)) == 0) {
                return 1;
            }
            m &= m - 1;
        }
        i += 16;
    }
#endif
    /* The last line of a block (too close to its end for a 16-byte read), or no SSE2. */
    for (; i <= last; i++) {
        const char *at = memchr(line + i, word[0], (size_t)(last - i + 1));
        if (at == NULL) {
            return 0;
        }
        i = at - line;
        if (at[k - 1] == word[k - 1] && memcmp(at + 1, word + 1, (size_t)(k - 2)) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
evaluate(const Program *p, int idx, const char *line, Py_ssize_t n, const char *end)
{
    const Node *node = &p->nodes[idx];
    switch (node->op) {
    case OP_WORD:
        return contains(node, line, n, end);
    case OP_AND:
        for (int i = 0; i < node->count; i++) {
            if (!evaluate(p, p->terms[node->first + i], line, n, end)) {
                return 0;
            }
        }
        return 1;
    case OP_OR:
        for (int i = 0; i < node->count; i++) {
            if (evaluate(p, p->terms[node->first + i], line, n, end)) {
                return 1;
            }
        }
        return 0;
    default: /* OP_NOT */
        return !evaluate(p, node->first, line, n, end);
    }
}

static PyObject *
match_lines(PyObject *module, PyObject *args)
{
    Py_buffer block;
    PyObject *tree;
    if (!PyArg_ParseTuple(args, "y*O:match_lines", &block, &tree)) {
        return NULL;
    }
    Program prog = {0};
    PyObject *out = NULL;
    if (compile_node(&prog, tree, 0) < 0) {
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL) {
        goto done;
    }
    const char *s = block.buf;
    const char *end = s + block.len;
    Py_ssize_t index = 0;
    const char *line = s;
    while (line < end) {
        const char *lf = memchr(line, '\n', (size_t)(end - line));
        if (lf == NULL) {
            break;
        }
        if (evaluate(&prog, 0, line, lf - line, end)) {
            PyObject *i = PyLong_FromSsize_t(index);
            if (i == NULL || PyList_Append(out, i) < 0) {
                Py_XDECREF(i);
                Py_CLEAR(out);
                goto done;
            }
            Py_DECREF(i);
        }
        index++;
        line = lf + 1;
    }
done:
    program_free(&prog);
    PyBuffer_Release(&block);
    return out;
}

static PyObject *
pick_lines(PyObject *module, PyObject *args)
{
    Py_buffer block;
    PyObject *indices;
    if (!PyArg_ParseTuple(args, "y*O:pick_lines", &block, &indices)) {
        return NULL;
    }
    PyObject *out = NULL;
    PyObject *seq = PySequence_Fast(indices, "indices must be a sequence");
    if (seq == NULL) {
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, block.len);
    if (out == NULL) {
        goto done;
    }
    char *w = PyBytes_AS_STRING(out);
    const char *s = block.buf;
    const char *end = s + block.len;
    const char *line = s;
    Py_ssize_t at = 0;  /* the index of `line` */
    Py_ssize_t prev = -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t want = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k));
        if (want == -1 && PyErr_Occurred()) {
            Py_CLEAR(out);
            goto done;
        }
        if (want <= prev) {
            PyErr_SetString(PyExc_ValueError, "indices must be ascending, each once");
            Py_CLEAR(out);
            goto done;
        }
        prev = want;
        const char *lf = NULL;
        for (;;) {
            lf = line < end ? memchr(line, '\n', (size_t)(end - line)) : NULL;
            if (lf == NULL) {
                PyErr_Format(PyExc_IndexError, "line %zd is not in the block", want);
                Py_CLEAR(out);
                goto done;
            }
            if (at == want) {
                break;
            }
            at++;
            line = lf + 1;
        }
        size_t len = (size_t)(lf + 1 - line);
        memcpy(w, line, len);
        w += len;
        at++;
        line = lf + 1;
    }
    _PyBytes_Resize(&out, w - PyBytes_AS_STRING(out));
done:
    Py_XDECREF(seq);
    PyBuffer_Release(&block);
    return out;
}

static PyMethodDef methods[] = {
    {"match_lines", match_lines, METH_VARARGS,
     "match_lines(block, program) -> list[int]: the indices of the lines the program matches."},
    {"pick_lines", pick_lines, METH_VARARGS,
     "pick_lines(block, indices) -> bytes: the lines at the ascending indices, joined."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "logd._linescan",
    "Word filters over blocks of lines, in compiled code (see logd.linescan).", -1, methods,
};

PyMODINIT_FUNC
PyInit__linescan(void)
{
    return PyModule_Create(&module);
}
