// Hand-written Swift beside the generated bindings (module PosCore).

/// Forwards the engine's events into an AsyncStream continuation.
final class StreamListener: EventListener, @unchecked Sendable {
    private let continuation: AsyncStream<PosEvent>.Continuation

    init(_ continuation: AsyncStream<PosEvent>.Continuation) {
        self.continuation = continuation
    }

    func onEvent(event: PosEvent) {
        continuation.yield(event)
        if case .closed = event {
            continuation.finish()
        }
    }
}

extension PosEngine {
    /// The engine's events as an `AsyncStream`: the first element is a
    /// `.snapshot`; the stream finishes after `.closed`, and ending the
    /// iteration unsubscribes.
    public func events() throws -> AsyncStream<PosEvent> {
        var continuation: AsyncStream<PosEvent>.Continuation!
        let stream = AsyncStream<PosEvent> { continuation = $0 }
        let subscription = try subscribe(listener: StreamListener(continuation))
        continuation.onTermination = { _ in subscription.cancel() }
        return stream
    }
}
