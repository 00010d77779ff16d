// Not built on these machines (no Android SDK): reference code.
// `cargo xtask test` compiles src/main and src/test of this module with kotlinc on the
// JVM, against the generated bindings and bindings/kotlin/src/main, and runs the tests
// there (JNA + the host libpos_ffi). Under Gradle it is an Android library: its
// dependency, the :poscore module, is one (JNA's AAR, the .so per ABI).

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.poscore.demo.model"
    compileSdk = 35

    defaultConfig {
        // java.time and java.nio.file (FileKeys, Fmt) need API 26.
        minSdk = 26
    }

    sourceSets {
        getByName("main") {
            java.srcDirs("src/main/kotlin")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    api(project(":poscore"))
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")
    // src/test/kotlin runs in `cargo xtask test`; running it here (a host unit test)
    // would also need JNA's plain jar, JUnit 5 and a host build of libpos_ffi on
    // jna.library.path, which this module does not set up.
}
