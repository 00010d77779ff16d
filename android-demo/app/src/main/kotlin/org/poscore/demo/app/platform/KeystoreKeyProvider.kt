// Not built on these machines (no Android SDK): reference code.
// The FFI interface it implements (KeyProvider: keyEncryptionKey / saveAnchor /
// loadAnchor) is exercised on the JVM by FileKeys (model) and FileKeyProvider
// (bindings/kotlin tests); this Keystore version has never run.
package org.poscore.demo.app.platform

import android.app.KeyguardManager
import android.content.Context
import android.security.keystore.KeyPermanentlyInvalidatedException
import android.security.keystore.KeyProperties
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.UserNotAuthenticatedException
import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.file.Files
import java.nio.file.NoSuchFileException
import java.nio.file.StandardCopyOption
import java.security.KeyStore
import java.security.SecureRandom
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec
import org.poscore.KeyMaterial
import org.poscore.KeyProvider
import org.poscore.KeyProviderException

/**
 * The store's key-encryption key (KEK), kept in app-private, no-backup
 * storage wrapped by a non-exportable Android Keystore key; and each
 * store's rollback anchor beside it, replaced atomically (temp file,
 * fsync, rename). [name] separates stores (the demo's from the shop's).
 *
 * - A locked phone (the wrapping key needs an unlocked device) gives
 *   `KeyProviderException.Unavailable`: the engine reports
 *   `PosException.StoreLocked` and nothing is lost (the model shows it).
 * - A Keystore key invalidated (new lock screen on some devices) gives
 *   `Failed`; never put key bytes in a message.
 * - `loadAnchor` returns null only when there is no anchor file.
 *
 * Android gives apps no storage a rooted device cannot roll back: a restore
 * of the whole sandbox at once is not detected (docs/store-recovery.md).
 */
class KeystoreKeyProvider(context: Context, private val name: String = "shop") : KeyProvider {
    private val dir = File(context.noBackupFilesDir, "poscore-keys-$name")
    private val alias = "poscore-kek-wrapper-$name"
    private val kekFile = File(dir, "kek.wrapped")
    private val keyguard = context.getSystemService(KeyguardManager::class.java)

    private fun wrapper(): SecretKey {
        val ks = KeyStore.getInstance("AndroidKeyStore").apply { load(null) }
        (ks.getKey(alias, null) as? SecretKey)?.let { return it }
        val gen = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, "AndroidKeyStore")
        val spec = KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
            .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
            .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
            .setKeySize(256)
        // API 28+: a locked phone cannot use it (on 26-27 the key is usable while locked).
        if (android.os.Build.VERSION.SDK_INT >= 28) spec.setUnlockedDeviceRequired(true)
        gen.init(spec.build())
        return gen.generateKey()
    }

    @Synchronized
    override fun keyEncryptionKey(): KeyMaterial = try {
        dir.mkdirs()
        if (!kekFile.exists()) {
            val kek = ByteArray(32).also { SecureRandom().nextBytes(it) }
            val cipher = Cipher.getInstance("AES/GCM/NoPadding")
            cipher.init(Cipher.ENCRYPT_MODE, wrapper())
            val tmp = File(dir, "kek.wrapped.tmp")
            FileOutputStream(tmp).use { it.write(cipher.iv + cipher.doFinal(kek)); it.fd.sync() }
            Files.move(tmp.toPath(), kekFile.toPath(), StandardCopyOption.ATOMIC_MOVE)
            kek.fill(0)
        }
        val blob = kekFile.readBytes()
        val cipher = Cipher.getInstance("AES/GCM/NoPadding")
        cipher.init(Cipher.DECRYPT_MODE, wrapper(), GCMParameterSpec(128, blob, 0, 12))
        KeyMaterial("android-keystore-1", cipher.doFinal(blob, 12, blob.size - 12))
    } catch (e: UserNotAuthenticatedException) {
        throw KeyProviderException.Unavailable()
    } catch (e: KeyPermanentlyInvalidatedException) {
        throw KeyProviderException.Failed("keystore key invalidated")
    } catch (e: java.security.GeneralSecurityException) {
        // Locked-device failures surface as other exceptions on some API levels.
        if (isLocked()) throw KeyProviderException.Unavailable()
        throw KeyProviderException.Failed("keystore: ${e.javaClass.simpleName}")
    } catch (e: IOException) {
        throw KeyProviderException.Failed("kek file: ${e.javaClass.simpleName}")
    }

    private fun isLocked(): Boolean = keyguard?.isDeviceLocked == true

    private fun anchorFile(storeId: String): File {
        // The engine passes 32 lowercase hex characters; anything else never reaches a path.
        if (!storeId.matches(Regex("[0-9a-f]{1,64}"))) throw KeyProviderException.Failed("invalid store id")
        return File(dir, "anchor-$storeId")
    }

    @Synchronized
    override fun saveAnchor(storeId: String, anchor: ByteArray) = try {
        dir.mkdirs()
        val target = anchorFile(storeId)
        val tmp = File(target.path + ".tmp")
        FileOutputStream(tmp).use { it.write(anchor); it.fd.sync() }
        Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        Unit
    } catch (e: IOException) {
        throw KeyProviderException.Failed("anchor write failed: ${e.javaClass.simpleName}")
    }

    @Synchronized
    override fun loadAnchor(storeId: String): ByteArray? = try {
        Files.readAllBytes(anchorFile(storeId).toPath())
    } catch (e: NoSuchFileException) {
        null // the only "no anchor"
    } catch (e: IOException) {
        throw KeyProviderException.Failed("anchor read failed: ${e.javaClass.simpleName}")
    }
}
