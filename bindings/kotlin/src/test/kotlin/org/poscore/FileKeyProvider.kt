package org.poscore

import java.io.File
import java.security.SecureRandom

/**
 * A file-backed stand-in for the Android Keystore, for tests on the JVM: a
 * random 256-bit key in a file. A real app keeps this key in the Keystore
 * (see bindings/kotlin/README.md). `locked = true` plays a locked device.
 */
class FileKeyProvider(private val file: File, var locked: Boolean = false) : KeyProvider {
    override fun keyEncryptionKey(): KeyMaterial {
        if (locked) throw KeyProviderException.Unavailable()
        if (!file.exists()) {
            val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
            file.writeBytes(key)
        }
        return KeyMaterial("kek-1", file.readBytes())
    }
}
