package org.poscore.demo

import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.file.Files
import java.nio.file.NoSuchFileException
import java.nio.file.StandardCopyOption
import java.security.SecureRandom
import org.poscore.KeyMaterial
import org.poscore.KeyProvider
import org.poscore.KeyProviderException

/**
 * Demo mode on the JVM only: a random key in a file and each store's
 * rollback anchor beside it, replaced atomically. Keep [dir] outside the
 * engine's data folder. The Android app uses KeystoreKeyProvider
 * (app/src/main/kotlin/.../KeystoreKeyProvider.kt) in every mode.
 * [locked] plays a locked phone.
 */
class FileKeys(private val dir: File, @Volatile var locked: Boolean = false) : KeyProvider {
    private val keyFile = File(dir, "kek")

    @Synchronized
    override fun keyEncryptionKey(): KeyMaterial {
        if (locked) throw KeyProviderException.Unavailable()
        dir.mkdirs()
        if (!keyFile.exists()) keyFile.writeBytes(ByteArray(32).also { SecureRandom().nextBytes(it) })
        return KeyMaterial("demo-file-1", keyFile.readBytes())
    }

    private fun anchorFile(storeId: String): File {
        if (!storeId.matches(Regex("[0-9a-f]{1,64}"))) throw KeyProviderException.Failed("invalid store id")
        return File(dir, "anchor-$storeId")
    }

    @Synchronized
    override fun saveAnchor(storeId: String, anchor: ByteArray) {
        if (locked) throw KeyProviderException.Unavailable()
        val target = anchorFile(storeId)
        val tmp = File(target.path + ".tmp")
        try {
            dir.mkdirs()
            FileOutputStream(tmp).use { it.write(anchor); it.fd.sync() }
            Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        } catch (e: IOException) {
            throw KeyProviderException.Failed("anchor write failed: ${e.javaClass.simpleName}")
        }
    }

    @Synchronized
    override fun loadAnchor(storeId: String): ByteArray? {
        if (locked) throw KeyProviderException.Unavailable()
        return try {
            Files.readAllBytes(anchorFile(storeId).toPath())
        } catch (e: NoSuchFileException) {
            null
        } catch (e: IOException) {
            throw KeyProviderException.Failed("anchor read failed: ${e.javaClass.simpleName}")
        }
    }
}
