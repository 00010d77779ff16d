// Hand-written Swift beside the generated bindings (module PosCore).

/// A `LogSink` that prints each record, as
/// `pos-core info pos_core::forwarding: forwarding round finished attempts=3 …`:
/// for tests and command-line tools. An app logs through `os.Logger`
/// instead (README, "Logs").
///
/// `log(record:)` is called on the library's threads, possibly several at
/// once; each record is one `print`.
public final class PrintLogSink: LogSink, @unchecked Sendable {
    private let prefix: String

    public init(prefix: String = "pos-core") {
        self.prefix = prefix
    }

    public func log(record: LogRecord) {
        print("\(prefix) \(record.level) \(record.target): \(record.message)")
    }
}

/// Prints the library's records at `minLevel` and above (`PrintLogSink`).
public func logToStandardOutput(minLevel: LogLevel = .info) {
    setLogSink(minLevel: minLevel, sink: PrintLogSink())
}
