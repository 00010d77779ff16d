// Hand-written Kotlin beside the generated bindings (package org.poscore).
package org.poscore

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow

/**
 * The engine's events as a cold [Flow]: collecting subscribes (the first
 * element is a [PosEvent.Snapshot]), cancelling the collector unsubscribes.
 * The flow completes after [PosEvent.Closed].
 */
fun PosEngine.events(): Flow<PosEvent> = callbackFlow {
    val subscription = subscribe(object : EventListener {
        override fun onEvent(event: PosEvent) {
            trySendBlocking(event)
            if (event is PosEvent.Closed) channel.close()
        }
    })
    awaitClose {
        subscription.cancel()
        subscription.close()
    }
}
