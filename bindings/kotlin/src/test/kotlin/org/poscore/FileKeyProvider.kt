package org.poscore

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.channels.FileChannel
import java.nio.file.Files
import java.nio.file.NoSuchFileException
import java.nio.file.StandardCopyOption
import java.nio.file.StandardOpenOption
import java.security.SecureRandom

/**
 * A file-backed stand-in for the Android Keystore, for tests on the JVM: a
 * random 256-bit key in a file, and each store's rollback anchor in a file
 * beside it (`<key file>.anchor-<store id>`), replaced atomically. Keep the
 * key file outside the engine's data folder, or a copy of that folder rolls
 * the anchor back with the store. A real app keeps both in the Keystore (see
 * bindings/kotlin/README.md). `locked = true` plays a locked device;
 * `failAnchorSaves = true` a keystore that refuses writes.
 */
class FileKeyProvider(
    private val file: File,
    var locked: Boolean = false,
    var failAnchorSaves: Boolean = false,
) : KeyProvider {
    override fun keyEncryptionKey(): KeyMaterial {
        if (locked) throw KeyProviderException.Unavailable()
        if (!file.exists()) {
            val key = ByteArray(32).also { SecureRandom().nextBytes(it) }
            file.writeBytes(key)
        }
        return KeyMaterial("kek-1", file.readBytes())
    }

    private fun anchorFile(storeId: String): File {
        if (!storeId.matches(Regex("[0-9a-f]{1,64}"))) {
            throw KeyProviderException.Failed("invalid store id for an anchor")
        }
        return File(file.path + ".anchor-" + storeId)
    }

    /** Temp file, fsync, rename over the old anchor, fsync the folder. */
    @Synchronized
    override fun saveAnchor(storeId: String, anchor: ByteArray) {
        if (locked) throw KeyProviderException.Unavailable()
        if (failAnchorSaves) throw KeyProviderException.Failed("anchor write refused")
        val target = anchorFile(storeId)
        val tmp = File(target.path + ".tmp")
        try {
            FileOutputStream(tmp).use { out ->
                out.write(anchor)
                out.fd.sync()
            }
            Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
            FileChannel.open(target.absoluteFile.parentFile.toPath(), StandardOpenOption.READ).use { it.force(true) }
        } catch (e: IOException) {
            throw KeyProviderException.Failed("cannot write the anchor file: ${e.javaClass.simpleName}")
        }
    }

    /** Null only when no anchor file exists; any other failure throws. */
    @Synchronized
    override fun loadAnchor(storeId: String): ByteArray? {
        if (locked) throw KeyProviderException.Unavailable()
        return try {
            Files.readAllBytes(anchorFile(storeId).toPath())
        } catch (e: NoSuchFileException) {
            null
        } catch (e: IOException) {
            throw KeyProviderException.Failed("cannot read the anchor file: ${e.javaClass.simpleName}")
        }
    }
}
