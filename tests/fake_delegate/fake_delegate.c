/* A fake TFLite external delegate for the tests: the external-delegate C ABI
 * (tflite_plugin_create_delegate / tflite_plugin_destroy_delegate) with a delegate that
 * accepts the graph and claims no node, so the model still runs, on the CPU kernels.
 *
 * Option "fail_file": while that file exists, creating the delegate fails (returns NULL),
 * as a missing or unplugged accelerator does. fake_delegate_prepared() counts how many
 * interpreters the delegate was applied to, so a test can see it was really used.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct TfLiteDelegate {
    void *data_;
    int (*Prepare)(void *context, struct TfLiteDelegate *delegate);
    void *CopyFromBufferHandle;
    void *CopyToBufferHandle;
    void *FreeBufferHandle;
    int64_t flags;
    void *opaque_delegate_builder;
} TfLiteDelegate;

static int prepared = 0;

int fake_delegate_prepared(void) { return prepared; }

static int prepare(void *context, TfLiteDelegate *delegate) {
    (void)context;
    (void)delegate;
    prepared++;
    return 0; /* kTfLiteOk */
}

TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t count,
                                              void (*report_error)(const char *)) {
    for (size_t i = 0; i < count; i++) {
        if (strcmp(keys[i], "fail_file") == 0 && access(values[i], F_OK) == 0) {
            if (report_error) report_error("fake delegate: device not available");
            return NULL;
        }
    }
    TfLiteDelegate *delegate = calloc(1, sizeof *delegate);
    if (delegate) delegate->Prepare = prepare;
    return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate) { free(delegate); }
