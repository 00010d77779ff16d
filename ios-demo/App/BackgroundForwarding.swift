// Not built on these machines (no Xcode): reference code.
//
// BGTaskScheduler wakes the app at the screen's `wakeUpAtMs`: the engine's
// `status().nextWakeUpMs` (a retry, a deadline, a session warning, never
// before the processor's Retry-After; in the background the engine leaves
// probes out). The task lets the engine probe for its run (`.appForeground`),
// then sends it back to the background. iOS decides when a BGAppRefreshTask
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
                await model.dispatch(.appForeground)
                await model.dispatch(.wake)
                await model.dispatch(.appBackground)
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
