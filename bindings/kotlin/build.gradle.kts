// NOT BUILT HERE: there is no Gradle or Android SDK on these machines.
// `cargo xtask test --only kotlin` compiles and tests this folder on the JVM
// with kotlinc, JNA and the JUnit 5 console instead (see README.md).
//
// An Android library module over POS Core (an AAR). Before Gradle runs,
// `cargo xtask aar` (cargo-ndk and the Android NDK; docs/packaging.md) makes:
//   build/generated-android/org/poscore/pos_ffi.kt  the bindings generated with
//       android = true (android/uniffi-android.toml over bindings/ffi/uniffi.toml)
//   build/jniLibs/<abi>/libpos_ffi.so               the four ABIs, profile `mobile`,
//       16 KB page aligned (.cargo/config.toml), stripped
// Neither is committed. `cargo xtask aar` then runs `gradle assembleRelease`
// here when Gradle is on PATH.

plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

// Gradle's own outputs go to build/gradle, so `gradle clean` keeps the
// generated bindings and the libraries above (all of build/ is gitignored).
layout.buildDirectory.set(layout.projectDirectory.dir("build/gradle"))

android {
    namespace = "org.poscore"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        // Shipped in the AAR: R8 keep rules for JNA and the generated bindings.
        consumerProguardFiles("android/consumer-rules.pro")
    }

    sourceSets {
        getByName("main") {
            // Hand-written Kotlin and the Android bindings (package org.poscore).
            // Not build/generated: that is the JVM flavour the harness makes.
            java.srcDirs("src/main/kotlin", "build/generated-android")
            // libpos_ffi.so per ABI: arm64-v8a/, armeabi-v7a/, x86_64/ ...
            jniLibs.srcDirs("build/jniLibs")
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
    // The AAR carries JNA's native dispatch library for Android's ABIs; 5.16
    // and later are built for 16 KB pages (Android 15+ devices). The JVM
    // harness tests with Debian's JNA 5.13 jar (same API).
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    // Bindings generated with android = true annotate API-34-only code with
    // @RequiresApi.
    implementation("androidx.annotation:annotation:1.9.1")
    // The generated suspend functions and PosEngine.events() (a Flow) need it;
    // 1.8.0 is the version bundled with the Kotlin 2.4.20 compiler used here.
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")

    // src/test/kotlin is run by the JVM harness. Running it under Gradle would
    // also need JNA's plain jar, JUnit 5 (useJUnitPlatform) and a host build of
    // libpos_ffi on jna.library.path; this module does not set that up.
}
