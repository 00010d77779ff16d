// Hand-written Kotlin beside the generated bindings (package org.poscore).
package org.poscore

/**
 * A [LogSink] that prints each record on standard output, as
 * `pos-core INFO pos_core::forwarding: forwarding round finished attempts=3 …`:
 * for tests, JVM tools and desktop apps without a logging framework. An
 * Android app logs through `android.util.Log` instead (README, "Logs").
 *
 * `log` is called on the library's threads, possibly several at once; each
 * record is one `println`.
 */
class PrintlnLogSink(private val prefix: String = "pos-core") : LogSink {
    override fun log(record: LogRecord) {
        println("$prefix ${record.level} ${record.target}: ${record.message}")
    }
}

/** Prints the library's records at [minLevel] and above on standard output ([PrintlnLogSink]). */
fun logToStdout(minLevel: LogLevel = LogLevel.INFO) = setLogSink(minLevel, PrintlnLogSink())
