// Not built on these machines (no Xcode): reference code.
//
// BGTaskScheduler wakes the app at the screen's `wakeUpAtMs`: the engine's
// `nextProbeAtMs()` while not online, else the nearest payment deadline
// (`status().nextDeadlineMs`). A `nextWakeUpMs()` does NOT exist in the FFI
// yet: the engine's own next wake-up (pos-core `PosEngine::next_wake_at`:
// retries, probes, deadlines, the processor's Retry-After) is not exported,
// so forwarding retries are not scheduled here; the engine's own driver
// retries them while the process lives. iOS decides when a BGAppRefreshTask
// really runs (`earliestBeginDate` is a lower bound), so deadlines are never
// guaranteed from the background. Info.plist: BGTaskSchedulerPermittedIdentifiers
// with the identifier below, UIBackgroundModes `fetch`.
import BackgroundTasks
import PosDemoKit

enum BackgroundForwarding {
    static let identifier = "org.poscore.demo.forward"

    static func register(model: CashierModel) {
        BGTaskScheduler.shared.register(forTaskWithIdentifier: identifier, using: nil) { task in
            let work = Task {
                await model.dispatch(.wake)
                schedule(atMs: await model.screen.wakeUpAtMs)
                task.setTaskCompleted(success: true)
            }
            task.expirationHandler = { work.cancel() }
        }
    }

    static func schedule(atMs: Int64?) {
        BGTaskScheduler.shared.cancel(taskRequestWithIdentifier: identifier)
        guard let atMs else { return }
        let request = BGAppRefreshTaskRequest(identifier: identifier)
        request.earliestBeginDate = Date(timeIntervalSince1970: Double(atMs) / 1000)
        try? BGTaskScheduler.shared.submit(request)
    }
}
